// One rhythm for everything the UI asks again and again: run a step now, then `everyMs` after
// each run ends (never two at once), until stopped.

export interface Poller {
  /** Runs the step now (or right after the one under way) and restarts the rhythm. */
  now(): void;
  /** No more runs; a run under way finishes, and `live()` tells it to drop its result. */
  stop(): void;
}

/**
 * `step(live)` does one round and reports its own errors (a throw is caught and the rhythm
 * goes on); `live()` turns false once stopped. While `skip()` is true the round is not run
 * (a window hidden in the tray asks nothing), but the rhythm is kept.
 */
export function poll(
  step: (live: () => boolean) => Promise<void>,
  everyMs: number,
  skip: () => boolean = () => false,
): Poller {
  let stopped = false;
  let running = false;
  let again = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const live = () => !stopped;
  const run = async () => {
    clearTimeout(timer);
    timer = undefined;
    if (running) {
      again = true;
      return;
    }
    running = true;
    do {
      again = false;
      if (!skip()) {
        try {
          await step(live);
        } catch {
          // The step shows its own errors; the next round tries again.
        }
      }
    } while (again && !stopped);
    running = false;
    if (!stopped) timer = setTimeout(run, everyMs);
  };
  void run();
  return {
    now: () => {
      if (!stopped) void run();
    },
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
