// The dashboard's words. Every visible string comes from a catalogue (`en.json`, `es.json`,
// with the same keys: see `i18n.test.ts`). The language follows the browser's until the user
// picks one, which is remembered in localStorage.

import en from "./en.json";
import es from "./es.json";
import { format, langOf, type Lang } from "./format";

export { format, langOf, type Lang };

export type Catalogue = typeof en;
export type Key = keyof Catalogue;
export const catalogues: Record<Lang, Catalogue> = { en, es };
export const languages: Lang[] = ["en", "es"];
const STORAGE_KEY = "flotilla.lang";

function initial(): Lang {
  try {
    const kept = localStorage.getItem(STORAGE_KEY);
    if (kept === "en" || kept === "es") return kept;
  } catch {
    // Storage can be disabled: fall through to the browser's language.
  }
  return langOf(typeof navigator === "undefined" ? "en" : navigator.language);
}

let current = $state<Lang>(initial());

export const i18n = {
  get lang(): Lang {
    return current;
  },
  set lang(l: Lang) {
    current = l;
    try {
      localStorage.setItem(STORAGE_KEY, l);
    } catch {
      // Not remembered, still switched.
    }
    document.documentElement.lang = l;
  },
};

/** The text of `key` in the current language. */
export function t(key: Key, params?: Record<string, string | number>): string {
  return format(catalogues[current][key], params);
}

/** Whether the catalogue has `key` (for codes that come from the head). */
export function has(key: string): key is Key {
  return key in catalogues.en;
}

/** A number with at most `digits` decimals, the current language's way. */
export function num(n: number, digits = 1): string {
  return new Intl.NumberFormat(current, { maximumFractionDigits: digits }).format(n);
}

/** A date and time, the current language's way. */
export function dateTime(ms: number): string {
  return new Intl.DateTimeFormat(current, { dateStyle: "medium", timeStyle: "short" }).format(ms);
}

/** "5 s ago", "hace 3 min". */
export function ago(ms: number, now: number): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 5) return t("time.justNow");
  if (s < 60) return t("time.secondsAgo", { n: s });
  if (s < 3600) return t("time.minutesAgo", { n: Math.floor(s / 60) });
  if (s < 86400) return t("time.hoursAgo", { n: Math.floor(s / 3600) });
  return t("time.daysAgo", { n: Math.floor(s / 86400) });
}
