import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BackendError } from "./backend";
import en from "./i18n/en.json";
import { format, i18n } from "./i18n/index.svelte";
import { batteryText, errorText, jobErrorText } from "./words";

// The catalogue's language is set on the page's <html>: a stand-in here, outside a browser.
beforeAll(() => {
  vi.stubGlobal("document", { documentElement: { lang: "" } });
  i18n.lang = "en";
});
afterAll(() => vi.unstubAllGlobals());

describe("jobErrorText", () => {
  it("says a job's not_found is about the job, not a machine", () => {
    expect(jobErrorText(new BackendError("not_found", 'the cluster has no job "x"'))).toBe(en["jobs.notFound"]);
    expect(errorText(new BackendError("not_found", "x"))).toBe(en["error.not_found"]);
  });

  it("reads other errors as everywhere else", () => {
    const e = new BackendError("ray_error", "Can only stop submission type jobs");
    expect(jobErrorText(e)).toBe(format(en["error.generic"], { message: "Can only stop submission type jobs" }));
    expect(jobErrorText(new BackendError("unauthorized", "no"))).toBe(en["error.unauthorized"]);
  });
});

describe("batteryText", () => {
  it("shows a dash, not a word, for a machine without a battery, in every language", () => {
    for (const lang of ["en", "es"] as const) {
      i18n.lang = lang;
      expect(batteryText(null)).toBe("—");
    }
    i18n.lang = "en";
    expect(batteryText({ percent: 80, onBattery: true })).toBe("80 % on battery");
    expect(batteryText({ percent: 100, onBattery: false })).toBe("100 % plugged in");
    expect(batteryText({ percent: null, onBattery: true })).toBe("On battery");
  });
});
