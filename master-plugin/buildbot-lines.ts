/**
 * Output shaping for Buildbot's msgpack worker protocol (msgpack_experimental_v7).
 *
 * Over msgpack the master does NOT split output into lines itself (unlike PB): its
 * RemoteCommand.remote_update_msgpack hands value[0] straight to
 * StreamLog.add_stdout_lines / _on_whole_lines, which assumes the text is whole
 * lines ending in '\n' (a partial line would lose its last character). So the
 * worker side must do what buildbot_worker/util/lineboundaries.py does: apply the
 * master's newline_re, hold a trailing partial line until its '\n' arrives (or the
 * command ends, when '\n' is appended), split lines longer than max_line_length,
 * and send [text, [index of each '\n' in text], [time each line started]].
 *
 * LogLines does it for the logs of one command, as buildbot-worker's
 * ProtocolCommandBase does: bytes are taken in the reads buildbot-worker gets
 * them in, decoded, and split into whole lines per log.
 */

/** buildbot-worker's default newline_re (base.py BotBase), also what 3.7 masters send. */
export const DEFAULT_NEWLINE_RE = '(\\r\\n|\\r(?=.)|\\033\\[u|\\033\\[[0-9]+;[0-9]+[Hf]|\\033\\[2J|\\x08+)';
export const DEFAULT_MAX_LINE_LENGTH = 4096;

const DEFAULT_JS_RE = /(\r\n|\r(?=.)|\x1b\[u|\x1b\[[0-9]+;[0-9]+[Hf]|\x1b\[2J|\x08+)/gs;

/**
 * Turns the master's Python regular expression (set_worker_settings' newline_re)
 * into a global JS RegExp. Python octal escapes (\033) become \x1b; the 's' flag is
 * used because Python's '.' matches '\r' (JS's does not without it) — the only
 * place it matters, '\r' before '\n', is taken by the '\r\n' alternative first.
 * Anything JS cannot parse falls back to the default expression.
 */
export function pythonNewlineRe(src: unknown): RegExp {
  if (typeof src !== 'string' || src === '') return new RegExp(DEFAULT_JS_RE.source, 'gs');
  const translated = src.replace(/\\0?([0-7]{2,3})/g, (whole, oct: string) => {
    const n = parseInt(oct, 8);
    return n <= 0xff ? '\\x' + n.toString(16).padStart(2, '0') : whole;
  });
  try {
    const re = new RegExp(translated, 'gs');
    if (re.test('')) return new RegExp(DEFAULT_JS_RE.source, 'gs'); // would match empty: unsafe
    re.lastIndex = 0;
    return re;
  } catch {
    return new RegExp(DEFAULT_JS_RE.source, 'gs');
  }
}

/** [text, lf_positions, line_times] as buildbot_worker's LineBoundaryFinder returns it. */
export type LineInfo = [string, number[], number[]];

/** End of a piece of at most n UTF-16 units of s from start, not separating a surrogate pair. */
function cutAt(s: string, start: number, n: number): number {
  const end = start + n;
  if (end >= s.length) return s.length;
  const c = s.charCodeAt(end - 1);
  return n > 1 && c >= 0xd800 && c <= 0xdbff ? end - 1 : end;
}

/**
 * Streaming line splitter, same contract as buildbot_worker/util/lineboundaries.py:
 * append() returns whole lines (each ending in '\n') or null; the partial tail is
 * held (always shorter than maxLineLength, so memory is bounded); flush() returns
 * the tail with a '\n' added. Lines of maxLineLength or more are cut into pieces of
 * maxLineLength - 1 characters plus '\n' (buildbot-worker's intent; its slicing
 * has an off-by-one we do not copy). maxLineLength below 3 means the default.
 */
export class LineBoundaryFinder {
  private partial = '';
  private partialTime = 0;

  constructor(
    private readonly newlineRe: RegExp = pythonNewlineRe(undefined),
    private readonly maxLineLength: number = DEFAULT_MAX_LINE_LENGTH,
  ) {
    if (!(maxLineLength >= 3)) this.maxLineLength = DEFAULT_MAX_LINE_LENGTH;
  }

  /** Characters held back waiting for their newline. */
  get pending(): number {
    return this.partial.length;
  }

  append(text: string, time: number): LineInfo | null {
    if (text === '') return null;
    const hadPartial = this.partial !== '';
    const firstTime = hadPartial ? this.partialTime : time;
    this.newlineRe.lastIndex = 0;
    const all = (this.partial + text).replace(this.newlineRe, '\n');
    const out: string[] = [];
    const lf: number[] = [];
    const times: number[] = [];
    let length = 0;
    const push = (line: string): void => {
      out.push(line);
      length += line.length;
      lf.push(length - 1);
      times.push(out.length === 1 ? firstTime : time);
    };
    const max = this.maxLineLength;
    let first = 0;
    for (;;) {
      const nl = all.indexOf('\n', first);
      if (nl < 0) break;
      while (nl - first >= max) {
        const cut = cutAt(all, first, max - 1);
        push(all.slice(first, cut) + '\n');
        first = cut;
      }
      push(all.slice(first, nl + 1));
      first = nl + 1;
    }
    while (all.length - first >= max) {
      const cut = cutAt(all, first, max - 1);
      push(all.slice(first, cut) + '\n');
      first = cut;
    }
    const rest = all.slice(first);
    if (rest !== '' && (out.length > 0 || !hadPartial)) {
      // the tail starts now (or keeps its old start if nothing was emitted)
      this.partialTime = out.length > 0 ? time : firstTime;
    }
    this.partial = rest;
    if (out.length === 0) return null;
    return [out.join(''), lf, times];
  }

  flush(): LineInfo | null {
    if (this.partial === '') return null;
    const text = this.partial + '\n';
    const time = this.partialTime;
    this.partial = '';
    return [text, [text.length - 1], [time]];
  }
}

/**
 * UTF-8 decoding that survives a multi-byte character split across chunks;
 * invalid bytes become U+FFFD like buildbot-worker's decode(..., 'replace').
 * A BOM is kept as text (Python's 'utf-8' codec keeps it too).
 */
export class StreamDecoder {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  write(chunk: Uint8Array): string {
    return this.decoder.decode(chunk, { stream: true });
  }

  end(): string {
    return this.decoder.decode();
  }
}

/**
 * The most bytes buildbot-worker takes at a time: Twisted's process reader
 * reads a pipe 8192 bytes at a time (fdesc.readFromFD), its LogFileWatcher a
 * logfile 10000. Each read is one update into its buffer, so the bridge cuts
 * the agent's (larger) chunks the same way to shape updates the same.
 */
export const PIPE_READ_BYTES = 8192;
export const LOGFILE_READ_BYTES = 10_000;

/** A command's logs: 'stdout', 'stderr', 'header', or 'log:' and the logfile's name. */
export class LogLines {
  private readonly decoders = new Map<string, StreamDecoder>();
  private readonly finders = new Map<string, LineBoundaryFinder>();

  constructor(
    private readonly newlineRe: RegExp,
    private readonly maxLineLength: number,
  ) {}

  /** Hands `emit` the whole lines of each read of `chunk` that completed some (a string is one read). */
  append(log: string, chunk: Buffer | string, time: number, emit: (info: LineInfo) => void): void {
    if (typeof chunk === 'string') {
      const info = this.finder(log).append(chunk, time);
      if (info) emit(info);
      return;
    }
    let decoder = this.decoders.get(log);
    if (!decoder) this.decoders.set(log, (decoder = new StreamDecoder()));
    const finder = this.finder(log);
    const read = log.startsWith('log:') ? LOGFILE_READ_BYTES : PIPE_READ_BYTES;
    for (let at = 0; at < chunk.length; at += read) {
      const info = finder.append(decoder.write(chunk.subarray(at, at + read)), time);
      if (info) emit(info);
    }
  }

  /** Hands `emit` every held partial line (with '\n' added) and half character (as U+FFFD), log by log. */
  flush(time: number, emit: (log: string, info: LineInfo) => void): void {
    for (const [log, decoder] of this.decoders) {
      const tail = decoder.end();
      const info = tail === '' ? null : this.finder(log).append(tail, time);
      if (info) emit(log, info);
    }
    for (const log of [...this.finders.keys()].sort()) {
      const info = this.finders.get(log)!.flush();
      if (info) emit(log, info);
    }
  }

  private finder(log: string): LineBoundaryFinder {
    let f = this.finders.get(log);
    if (!f) this.finders.set(log, (f = new LineBoundaryFinder(this.newlineRe, this.maxLineLength)));
    return f;
  }
}
