import { describe, expect, it } from "vitest";
import { canStop, firstLine, isLive, jobMessage } from "./jobs";

describe("firstLine", () => {
  it("is null for no message", () => {
    expect(firstLine(null)).toBeNull();
    expect(firstLine(undefined)).toBeNull();
    expect(firstLine("")).toBeNull();
    expect(firstLine(" \n\t\n")).toBeNull();
  });

  it("keeps a short one-line message whole", () => {
    expect(firstLine("Job finished successfully.")).toEqual({
      line: "Job finished successfully.",
      full: "Job finished successfully.",
      shortened: false,
    });
    expect(firstLine("  padded  \n")).toEqual({ line: "padded", full: "padded", shortened: false });
  });

  it("shows the first line of a longer message and keeps the whole text", () => {
    const pip =
      "Failed to set up runtime environment.\n" +
      "Traceback (most recent call last):\n" +
      "  ERROR: No matching distribution found for nosuchpkg==9.9";
    expect(firstLine(pip)).toEqual({
      line: "Failed to set up runtime environment. …",
      full: pip,
      shortened: true,
    });
    expect(firstLine("\n\n  first\r\nsecond")?.line).toBe("first …");
  });

  it("cuts a long first line to the limit with an ellipsis", () => {
    const long = "x".repeat(50);
    const short = firstLine(long, 10);
    expect(short?.line).toBe("xxxxxxxxx…");
    expect([...(short?.line ?? "")]).toHaveLength(10);
    expect(short?.full).toBe(long);
    expect(short?.shortened).toBe(true);
    expect(firstLine("x".repeat(10), 10)).toEqual({ line: "x".repeat(10), full: "x".repeat(10), shortened: false });
  });
});

describe("canStop", () => {
  it("offers Stop for submitted jobs that are pending or running", () => {
    expect(canStop({ status: "PENDING", kind: "SUBMISSION" })).toBe(true);
    expect(canStop({ status: "RUNNING", kind: "SUBMISSION" })).toBe(true);
  });

  it("offers no Stop for a job that has ended", () => {
    for (const status of ["STOPPED", "SUCCEEDED", "FAILED", "UNKNOWN", ""]) {
      expect(canStop({ status, kind: "SUBMISSION" }), status).toBe(false);
    }
  });

  it("offers no Stop for a driver, which Ray's job API cannot stop", () => {
    expect(canStop({ status: "RUNNING", kind: "DRIVER" })).toBe(false);
    expect(canStop({ status: "PENDING", kind: "DRIVER" })).toBe(false);
  });
});

describe("isLive", () => {
  it("is true for a pending or running job only (the admin view explains a live driver)", () => {
    expect(isLive({ status: "PENDING" })).toBe(true);
    expect(isLive({ status: "RUNNING" })).toBe(true);
    expect(isLive({ status: "FAILED" })).toBe(false);
  });
});

describe("jobMessage", () => {
  const traceback =
    "runtime_env setup failed: Failed to set up runtime environment.\n" +
    "Traceback (most recent call last):\n" +
    "    ERROR: No matching distribution found for nosuchpkg==9.9";

  it("says the head's one-line reason and keeps Ray's whole message", () => {
    const reason = "installing the job's dependencies failed: No matching distribution found for nosuchpkg==9.9";
    expect(jobMessage({ reason, message: traceback })).toEqual({
      line: reason,
      full: traceback,
      shortened: true,
    });
  });

  it("falls back to the first line of Ray's message without a reason", () => {
    expect(jobMessage({ reason: null, message: traceback })?.line).toBe(
      "runtime_env setup failed: Failed to set up runtime environment. …",
    );
    expect(jobMessage({ reason: null, message: null })).toBeNull();
  });

  it("is whole when the reason is the message", () => {
    const m = "Job finished successfully.";
    expect(jobMessage({ reason: m, message: m })).toEqual({ line: m, full: m, shortened: false });
  });
});
