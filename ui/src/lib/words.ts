// The catalogue's words for what the head sends: states, reasons, errors.

import { BackendError } from "./backend";
import { has, i18n, num, t } from "./i18n/index.svelte";
import type { Row } from "./rows";

export function stateText(state: string): string {
  const key = `state.${state}`;
  return has(key) ? t(key) : t("state.unknown");
}

/** The reason in the current language: the catalogue's wording for a known code (with the
 * row's figures), else the agent's own text in that language. */
export function reasonText(row: Row): string {
  const all = row.reason === "contributing" && (row.cpusAdvertised ?? 0) >= (row.cpusTotal ?? Infinity);
  const key = all ? "reason.contributing_all" : `reason.${row.reason}`;
  if (row.reason && has(key)) {
    const cpus = num(row.cpusAdvertised ?? 0);
    return t(key, { cpus, total: num(row.cpusTotal ?? 0) });
  }
  if (row.reasonText) return i18n.lang === "es" ? row.reasonText.es : row.reasonText.en;
  return t("common.none");
}

export function errorText(e: unknown): string {
  if (e instanceof BackendError) {
    const key = `error.${e.code}`;
    if (has(key)) return t(key, { message: e.message });
    return t("error.generic", { message: e.message });
  }
  return t("error.generic", { message: e instanceof Error ? e.message : String(e) });
}

/** An error of a job's action: the head's `not_found` there is about the job, not a machine. */
export function jobErrorText(e: unknown): string {
  if (e instanceof BackendError && e.code === "not_found") return t("jobs.notFound");
  return errorText(e);
}

/** A node's battery: its level and whether it is plugged in, or a dash for a machine without
 * one (or that does not say). */
export function batteryText(battery: Row["battery"]): string {
  if (!battery) return t("battery.none");
  if (battery.percent === null) return t("battery.onBattery");
  const percent = num(battery.percent, 0);
  return battery.onBattery ? t("battery.discharging", { percent }) : t("battery.plugged", { percent });
}
