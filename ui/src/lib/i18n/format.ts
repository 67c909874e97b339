// The catalogue helpers that hold no state (tested in `i18n.test.ts`).

export type Lang = "en" | "es";

/** The catalogue language for a BCP 47 tag such as `es-ES`; English for the rest. */
export function langOf(tag: string | undefined | null): Lang {
  const primary = (tag ?? "").toLowerCase().split(/[-_]/)[0];
  return primary === "es" ? "es" : "en";
}

/** `{name}` placeholders replaced by `params`; unknown placeholders are left as they are. */
export function format(text: string, params: Record<string, string | number> = {}): string {
  return text.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in params ? String(params[name]) : whole,
  );
}
