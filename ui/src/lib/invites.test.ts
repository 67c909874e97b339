import { describe, expect, it } from "vitest";
import { canWithdraw, stateKey, usesText } from "./invites";

describe("join codes", () => {
  it("names every state the head reports and leaves unknown ones alone", () => {
    expect(stateKey("usable")).toBe("invites.usable");
    expect(stateKey("used up")).toBe("invites.usedUp");
    expect(stateKey("expired")).toBe("invites.expired");
    expect(stateKey("withdrawn")).toBe("invites.withdrawn");
    expect(stateKey("paused")).toBeNull();
  });

  it("counts uses from the total, or says what is left when the total is not known", () => {
    expect(usesText({ uses: 3, uses_left: 1 })).toEqual({ used: 2, total: 3 });
    expect(usesText({ uses: 1, uses_left: 1 })).toEqual({ used: 0, total: 1 });
    expect(usesText({ uses: 2, uses_left: 5 })).toEqual({ used: 0, total: 2 });
    expect(usesText({ uses: 0, uses_left: 4 })).toEqual({ left: 4 });
  });

  it("offers to withdraw only a code that still admits someone", () => {
    expect(canWithdraw({ state: "usable" })).toBe(true);
    for (const state of ["used up", "expired", "withdrawn", "something new"]) {
      expect(canWithdraw({ state })).toBe(false);
    }
  });
});
