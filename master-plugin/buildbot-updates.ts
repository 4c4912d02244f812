/**
 * Update shaping: a port of buildbot_worker/util/buffer_manager.py (Buildbot
 * 3.7), so that Buildbot gets 'update' messages shaped like buildbot-worker's.
 *
 * Contract (the Python class's, kept step for step):
 * - append(logname, data) takes one update. 'stdout', 'stderr' and 'header'
 *   carry a LineInfo [text, newline indexes, line times]; 'log' carries
 *   [log name, LineInfo]; any other key (rc, elapsed, stat, files ...) a value.
 * - Its size: text length + 8 × (indexes + times) for lines, 20 for a value.
 * - If it fits in what is left of bufferSize it is buffered: lines join the
 *   last buffered entry when that has the same key (for 'log', the same log
 *   name), and the timer is armed unless it is already.
 * - Otherwise the buffer is sent first. Then an update of at most bufferSize
 *   starts the new buffer (and arms the timer); a larger value is sent alone;
 *   larger lines are cut into pieces of at most bufferSize (at least one line
 *   each), each sent as its own message, and nothing stays buffered.
 * - The timer sends the buffer; flush() sends it at once. Sending stops the timer.
 * - A message is a non-empty list of [key, data], handed to the consumer in order.
 *
 * Where it differs:
 * - The timeout is asked for each time the timer is armed (buffer_manager takes
 *   buffer_timeout once), so that the bridge can send a line after a quiet
 *   spell at once and gather streaming output (see buildbot-output.ts).
 * - Sizes count UTF-16 units, Python's count code points: they differ only for
 *   characters outside the Basic Multilingual Plane.
 */
import type { LineInfo } from './buildbot-lines';

/** One entry of an 'update' message's args: [key, data]. */
export type Update = [string, unknown];

/** buffer_manager's keys whose data is lines. */
const LOG_KEYS = new Set(['log', 'stdout', 'stderr', 'header']);

/** What append() counts for an update (buffer_manager's len_data). */
export function updateSize(key: string, data: unknown): number {
  if (!LOG_KEYS.has(key)) return 20;
  const info = key === 'log' ? (data as [string, LineInfo])[1] : (data as LineInfo);
  return info[0].length + 8 * (info[1].length + info[2].length);
}

/** Appends b's lines to a's, in place, and returns a (join_line_info). */
export function joinLineInfo(a: LineInfo, b: LineInfo): LineInfo {
  const offset = a[0].length;
  a[0] += b[0];
  for (const i of b[1]) a[1].push(offset + i);
  for (const t of b[2]) a[2].push(t);
  return a;
}

export interface UpdateTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: UpdateTimers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export class BufferManager {
  private buffered: Update[] = [];
  private buflen = 0;
  private timer: unknown = null;

  constructor(
    private readonly consumer: (message: Update[]) => void,
    private readonly bufferSize: number,
    /** Milliseconds from arming the timer to sending the buffer, asked for each time it is armed. */
    private readonly timeoutMs: () => number,
    private readonly timers: UpdateTimers = realTimers,
  ) {}

  /** What the buffer holds, as append() counts it. */
  get bufferedSize(): number {
    return this.buflen;
  }

  append(key: string, data: unknown): void {
    const isLines = LOG_KEYS.has(key);
    const size = updateSize(key, data);
    if (size <= this.bufferSize - this.buflen) {
      if (isLines) this.appendMaybeJoin(key, data);
      else this.buffered.push([key, data]);
      this.buflen += size;
      this.armTimer();
      return;
    }
    this.sendBuffer();
    if (size <= this.bufferSize) {
      this.buffered.push([key, data]);
      this.buflen += size;
      this.armTimer();
      return;
    }
    if (!isLines) {
      this.send([[key, data]]);
      return;
    }
    const log = key === 'log' ? (data as [string, LineInfo])[0] : null;
    const info = log === null ? (data as LineInfo) : (data as [string, LineInfo])[1];
    for (const piece of this.pieces(info)) this.send([[key, log === null ? piece : [log, piece]]]);
  }

  flush(): void {
    if (this.buffered.length > 0) this.sendBuffer();
  }

  /** Stops the timer and forgets what is buffered (the command is gone). */
  discard(): void {
    this.stopTimer();
    this.buffered = [];
    this.buflen = 0;
  }

  private appendMaybeJoin(key: string, data: unknown): void {
    const last = this.buffered[this.buffered.length - 1];
    if (last && last[0] === key) {
      if (key === 'log') {
        const prev = last[1] as [string, LineInfo];
        const next = data as [string, LineInfo];
        if (prev[0] === next[0]) {
          joinLineInfo(prev[1], next[1]);
          return;
        }
      } else {
        joinLineInfo(last[1] as LineInfo, data as LineInfo);
        return;
      }
    }
    this.buffered.push([key, data]);
  }

  /** The big-update loop of append(): runs of whole lines of at most bufferSize each (one line at least). */
  private *pieces(info: LineInfo): Generator<LineInfo> {
    const [text, lf, times] = info;
    let start = 0;
    while (start < lf.length) {
      let end = start + 1;
      while (end <= lf.length) {
        const textSize = start === 0 ? lf[end - 1] + 1 : lf[end - 1] - lf[start - 1];
        if (textSize + 16 * (end - start) <= this.bufferSize) {
          end++;
        } else {
          if (end > start + 1) end--;
          break;
        }
      }
      if (end > lf.length) end--;
      const from = start === 0 ? 0 : lf[start - 1] + 1;
      const to = lf[end - 1] + 1;
      yield [text.slice(from, to), lf.slice(start, end).map((i) => i - from), times.slice(start, end)];
      start = end;
    }
  }

  private armTimer(): void {
    if (this.timer !== null) return;
    this.timer = this.timers.set(() => {
      this.timer = null;
      this.sendBuffer();
    }, this.timeoutMs());
  }

  private stopTimer(): void {
    if (this.timer === null) return;
    this.timers.clear(this.timer);
    this.timer = null;
  }

  private sendBuffer(): void {
    const message = this.buffered;
    this.buffered = [];
    this.buflen = 0;
    this.stopTimer();
    this.send(message);
  }

  private send(message: Update[]): void {
    if (message.length > 0) this.consumer(message);
  }
}
