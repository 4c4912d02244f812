/**
 * Peer-supplied text made safe to show: in a log line, or in an error
 * message that reaches a person. Control characters (C0, DEL, C1), the line
 * and paragraph separators and the bidirectional controls become escapes
 * (\n, \x1b, \u202e), so that a worker name or a peer's message can neither
 * end a line and forge the next, nor colour the terminal, nor reorder what is
 * shown. Everything else is kept as it is, backslashes included.
 *
 * What comes out is also bounded: at most MAX_PRINTABLE characters. Longer
 * text loses its middle, whole characters and whole escapes, for a mark that
 * says how much was cut; its start and its end stay, so that a log line
 * keeps its prefix and what follows the peer's text. A peer's megabyte, or
 * the fourfold growth of escaped control characters, cannot flood a log.
 *
 * Escaping twice changes nothing (the result is short enough and holds
 * nothing to escape): each layer may escape what it writes.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const SHORT: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** The longest text printable() returns. */
export const MAX_PRINTABLE = 1000;

function escape(c: string): string {
  const code = c.charCodeAt(0);
  return SHORT[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

export function printable(text: string): string {
  // escaping never shortens: text longer than the bound is cut in any case
  if (text.length <= MAX_PRINTABLE) {
    const escaped = text.replace(UNSAFE, escape);
    if (escaped.length <= MAX_PRINTABLE) return escaped;
  }
  return cutInTheMiddle(text);
}

const cutMark = (characters: number) => ` …[${characters} characters cut]… `;

/** `text` escaped, its middle replaced by the cut mark, in MAX_PRINTABLE characters. */
function cutInTheMiddle(text: string): string {
  const room = MAX_PRINTABLE - cutMark(text.length).length;
  const head = escapedEnd(text, Math.floor(room / 2), 'start');
  const tail = escapedEnd(text.slice(head.used), room - head.shown.length, 'end');
  return head.shown + cutMark(text.length - head.used - tail.used) + tail.shown;
}

const isHigh = (unit: number) => unit >= 0xd800 && unit <= 0xdbff;
const isLow = (unit: number) => unit >= 0xdc00 && unit <= 0xdfff;

/**
 * As much of `text`'s start (or end), escaped, as fits in `room` characters,
 * without splitting a character or an escape; `used` is how much of `text` it took.
 */
function escapedEnd(text: string, room: number, which: 'start' | 'end'): { shown: string; used: number } {
  const pieces: string[] = [];
  let length = 0;
  let used = 0;
  while (used < text.length) {
    // one character: a surrogate pair stays whole
    let from = which === 'start' ? used : text.length - used - 1;
    let to = from + 1;
    if (which === 'start' && isHigh(text.charCodeAt(from)) && isLow(text.charCodeAt(to))) to++;
    if (which === 'end' && isLow(text.charCodeAt(from)) && isHigh(text.charCodeAt(from - 1))) from--;
    const piece = text.slice(from, to).replace(UNSAFE, escape);
    if (length + piece.length > room) break;
    pieces.push(piece);
    length += piece.length;
    used += to - from;
  }
  if (which === 'end') pieces.reverse();
  return { shown: pieces.join(''), used };
}

/**
 * A stack trace for --verbose output: the message as one printable line (it
 * may hold a peer's text), then each frame on a printable line of its own.
 */
export function printableStack(error: Error): string {
  const lines = (error.stack ?? error.message).split('\n');
  let frames = lines.length;
  while (frames > 1 && lines[frames - 1]!.startsWith('    at ')) frames--;
  return [lines.slice(0, frames).join('\n'), ...lines.slice(frames)].map((line) => printable(line)).join('\n');
}

/** A log function whose every line reaches `sink` escaped (without a sink, lines are dropped). */
export function printableLog(sink?: (line: string) => void): (line: string) => void {
  return sink ? (line) => sink(printable(line)) : () => undefined;
}
