/**
 * A log for events a peer can cause at will (dropped connections, failed
 * handshakes): the first event of a kind is logged as it comes; the others
 * in the next interval are only counted, and one line at its end says how
 * many there were. A flood thus costs the log two lines per kind and
 * interval, and the counts are not lost.
 */
export const LOG_INTERVAL_MS = 10_000;

interface Window {
  count: number;
  timer: NodeJS.Timeout;
  started: number;
}

export class RateLimitedLog {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly log: (line: string) => void,
    private readonly intervalMs = LOG_INTERVAL_MS,
  ) {}

  /** One event of `kind` (a plural noun phrase: "connections dropped"); `line` describes it. */
  note(kind: string, line: string): void {
    const open = this.windows.get(kind);
    if (open) {
      open.count++;
      return;
    }
    this.log(line);
    const timer = setTimeout(() => this.summarize(kind), this.intervalMs);
    timer.unref();
    this.windows.set(kind, { count: 0, timer, started: Date.now() });
  }

  /** Logs the counts of every open interval now (when the hub closes, or a wait ends). */
  flush(): void {
    for (const kind of [...this.windows.keys()]) this.summarize(kind);
  }

  private summarize(kind: string): void {
    const window = this.windows.get(kind)!;
    this.windows.delete(kind);
    clearTimeout(window.timer);
    const seconds = Math.max(1, Math.round((Date.now() - window.started) / 1000));
    if (window.count > 0) this.log(`${window.count} more ${kind} in the last ${seconds} s`);
  }
}
