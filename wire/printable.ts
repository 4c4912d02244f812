/**
 * Peer-supplied text made safe to show: in a log line, or in an error
 * message that reaches a person. Control characters (C0, DEL, C1), the line
 * and paragraph separators and the bidirectional controls become escapes
 * (\n, \x1b, \u202e), so that a worker name or a peer's message can neither
 * end a line and forge the next, nor colour the terminal, nor reorder what is
 * shown. Everything else is kept as it is, backslashes included, so escaping
 * twice changes nothing: each layer may escape what it writes.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const SHORT: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escape(c: string): string {
  const code = c.charCodeAt(0);
  return SHORT[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

export function printable(text: string): string {
  return text.replace(UNSAFE, escape);
}

/** A stack trace for --verbose output: escaped as one log line would be, then one frame a line again. */
export function printableStack(error: Error): string {
  return printable(error.stack ?? error.message).replace(/\\n(?= {4}at )/g, '\n');
}

/** A log function whose every line reaches `sink` escaped (without a sink, lines are dropped). */
export function printableLog(sink?: (line: string) => void): (line: string) => void {
  return sink ? (line) => sink(printable(line)) : () => undefined;
}
