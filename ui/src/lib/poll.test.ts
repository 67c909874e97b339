import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { poll } from "./poll";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("poll", () => {
  it("runs at once, then every interval after each run ends, until stopped", async () => {
    let runs = 0;
    const p = poll(async () => {
      runs += 1;
    }, 1000);
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toBe(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(runs).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toBe(2);
    p.stop();
    await vi.advanceTimersByTimeAsync(5000);
    expect(runs).toBe(2);
  });

  it("keeps the rhythm when a round throws", async () => {
    let runs = 0;
    const p = poll(async () => {
      runs += 1;
      throw new Error("head away");
    }, 100);
    await vi.advanceTimersByTimeAsync(350);
    expect(runs).toBe(4);
    p.stop();
  });

  it("never runs two rounds at once: now() during a round queues one more", async () => {
    let inFlight = 0;
    let most = 0;
    let runs = 0;
    const p = poll(async () => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      runs += 1;
      await new Promise((r) => setTimeout(r, 50));
      inFlight -= 1;
    }, 1000);
    await vi.advanceTimersByTimeAsync(10);
    p.now();
    p.now();
    await vi.advanceTimersByTimeAsync(100);
    expect(most).toBe(1);
    expect(runs).toBe(2);
    // The rhythm restarts after the extra round: nothing until 1000 ms after it ended.
    await vi.advanceTimersByTimeAsync(900);
    expect(runs).toBe(2);
    await vi.advanceTimersByTimeAsync(100);
    expect(runs).toBe(3);
    p.stop();
  });

  it("skips rounds while asked to and tells a stopped round to drop its result", async () => {
    let hidden = true;
    let runs = 0;
    const seen: boolean[] = [];
    const p = poll(
      async (live) => {
        runs += 1;
        await new Promise((r) => setTimeout(r, 50));
        seen.push(live());
      },
      100,
      () => hidden,
    );
    await vi.advanceTimersByTimeAsync(250);
    expect(runs).toBe(0);
    hidden = false;
    await vi.advanceTimersByTimeAsync(60);
    expect(runs).toBe(1);
    p.stop();
    await vi.advanceTimersByTimeAsync(100);
    expect(seen).toEqual([false]);
    expect(runs).toBe(1);
  });
});
