import { describe, expect, it } from "vitest";
import { minorOf, pythonDiff } from "./python";

describe("pythonDiff", () => {
  it("marks nothing while either version is not known", () => {
    expect(pythonDiff("", "3.11.7")).toBeNull();
    expect(pythonDiff("3.11.2", "")).toBeNull();
    expect(pythonDiff("", "")).toBeNull();
    expect(pythonDiff(null, "3.11.7")).toBeNull();
    expect(pythonDiff("3.11.2", undefined)).toBeNull();
    expect(pythonDiff("  ", "3.11.7")).toBeNull();
  });

  it("marks nothing for the cluster's own version", () => {
    expect(pythonDiff("3.11.7", "3.11.7")).toBeNull();
    expect(pythonDiff(" 3.11.7 ", "Python 3.11.7")).toBeNull();
  });

  it("marks another patch of the cluster's minor as a patch difference", () => {
    expect(pythonDiff("3.11.2", "3.11.7")).toBe("patch");
    expect(pythonDiff("3.11.10", "3.11.1")).toBe("patch");
    expect(pythonDiff("3.11.7rc1", "3.11.7")).toBe("patch");
  });

  it("marks another minor or major as a minor difference", () => {
    expect(pythonDiff("3.12.1", "3.11.7")).toBe("minor");
    expect(pythonDiff("3.1.7", "3.11.7")).toBe("minor");
    expect(pythonDiff("2.11.7", "3.11.7")).toBe("minor");
  });

  it("marks no patch difference when either side names no patch", () => {
    expect(pythonDiff("3.11.2", "3.11")).toBeNull();
    expect(pythonDiff("3.11", "3.11.7")).toBeNull();
    expect(pythonDiff("3.12", "3.11.7")).toBe("minor");
  });
});

describe("minorOf", () => {
  it("keeps the major and minor", () => {
    expect(minorOf("3.11.7")).toBe("3.11");
    expect(minorOf("3.12")).toBe("3.12");
  });
});
