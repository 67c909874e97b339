import { describe, expect, it } from "vitest";
import en from "./en.json";
import es from "./es.json";
import { format, langOf } from "./format";

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe("catalogues", () => {
  it("have the same keys in English and Spanish", () => {
    expect(Object.keys(es).sort()).toEqual(Object.keys(en).sort());
  });

  it("have no empty text and the same placeholders in both languages", () => {
    for (const [key, text] of Object.entries(en)) {
      const other = (es as Record<string, string>)[key];
      expect(text.trim(), key).not.toBe("");
      expect(other.trim(), key).not.toBe("");
      expect(placeholders(other), key).toEqual(placeholders(text));
    }
  });

  it("cover every reason code the agent's policy and the head send", () => {
    const codes = [
      "paused_until", "paused_indefinitely", "finishing", "outside_hours", "exclusive_app",
      "on_battery", "battery_low", "too_hot", "low_memory", "owner_active", "owner_busy",
      "ramping_up", "settling", "contributing", "disconnected", "revoked",
    ];
    for (const code of codes) expect(en, code).toHaveProperty(`reason.${code}`);
  });
});

describe("format", () => {
  it("fills placeholders and leaves unknown ones", () => {
    expect(format("{a} of {b}", { a: 1, b: "2" })).toBe("1 of 2");
    expect(format("{a} {zz}", { a: "x" })).toBe("x {zz}");
  });

  it("picks Spanish for any Spanish tag and English otherwise", () => {
    expect(langOf("es-ES")).toBe("es");
    expect(langOf("es_419")).toBe("es");
    expect(langOf("en-GB")).toBe("en");
    expect(langOf("fr")).toBe("en");
    expect(langOf(undefined)).toBe("en");
  });
});
