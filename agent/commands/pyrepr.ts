/**
 * Python's repr() and pipes.quote(), for the header lines buildbot-worker's
 * runprocess writes: " argv: [b'echo', b'hi']", " watching logfiles {'a': 'x.log'}",
 * "command timed out: ... running b'sleep 9'" and the quoted command line.
 *
 * Values come off the wire (CBOR): strings, numbers, booleans, null, arrays,
 * plain objects and byte arrays. Numbers print as JavaScript does (a float
 * 1.0 that crossed the wire as 1 prints "1", where Python would print "1.0").
 */

/** Python bytes repr: b'...' with \\xNN escapes, quote choice as CPython's. */
export function reprBytes(data: Uint8Array): string {
  let hasSingle = false;
  let hasDouble = false;
  for (const b of data) {
    if (b === 0x27) hasSingle = true;
    else if (b === 0x22) hasDouble = true;
  }
  const quote = hasSingle && !hasDouble ? '"' : "'";
  let out = 'b' + quote;
  for (const b of data) {
    if (b === quote.charCodeAt(0) || b === 0x5c) out += '\\' + String.fromCharCode(b);
    else if (b === 0x09) out += '\\t';
    else if (b === 0x0a) out += '\\n';
    else if (b === 0x0d) out += '\\r';
    else if (b < 0x20 || b >= 0x7f) out += '\\x' + b.toString(16).padStart(2, '0');
    else out += String.fromCharCode(b);
  }
  return out + quote;
}

// Python's str.isprintable() is false for categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs (except ' ').
const NON_PRINTABLE = /[\p{C}\p{Z}]/u;

/** Python str repr: '...' with non-printable characters escaped. */
export function reprStr(text: string): string {
  const hasSingle = text.includes("'");
  const hasDouble = text.includes('"');
  const quote = hasSingle && !hasDouble ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const cp = ch.codePointAt(0) as number;
    if (ch === quote || ch === '\\') out += '\\' + ch;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (cp < 0x20 || cp === 0x7f) out += '\\x' + cp.toString(16).padStart(2, '0');
    else if (cp < 0x7f || ch === ' ' || !NON_PRINTABLE.test(ch)) out += ch;
    else if (cp <= 0xff) out += '\\x' + cp.toString(16).padStart(2, '0');
    else if (cp <= 0xffff) out += '\\u' + cp.toString(16).padStart(4, '0');
    else out += '\\U' + cp.toString(16).padStart(8, '0');
  }
  return out + quote;
}

/** Python repr of a wire value (dicts print in insertion order, as Python's do). */
export function pyRepr(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'string') return reprStr(value);
  if (typeof value === 'number') {
    if (Number.isNaN(value)) return 'nan';
    if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
    return String(value);
  }
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Uint8Array) return reprBytes(value);
  if (Array.isArray(value)) return '[' + value.map(pyRepr).join(', ') + ']';
  if (value instanceof Map) {
    return '{' + [...value].map(([k, v]) => `${pyRepr(k)}: ${pyRepr(v)}`).join(', ') + '}';
  }
  if (typeof value === 'object') {
    return (
      '{' +
      Object.entries(value as Record<string, unknown>)
        .map(([k, v]) => `${reprStr(k)}: ${pyRepr(v)}`)
        .join(', ') +
      '}'
    );
  }
  return String(value);
}

/** Python's type(v).__name__ of a wire value, for TypeError messages. */
export function pyTypeName(v: unknown): string {
  if (v === null || v === undefined) return 'NoneType';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'string') return 'str';
  if (v instanceof Uint8Array) return 'bytes';
  if (Array.isArray(v)) return 'list';
  return 'dict';
}

/** Python's str(number), for "(timeout 10 secs)" and "command timed out: 10 seconds". */
export function pyStr(value: unknown): string {
  if (typeof value === 'string') return value;
  return pyRepr(value);
}

const UNSAFE = /[^\w@%+=:,./-]/; // shlex._find_unsafe (ASCII \w)

/** pipes.quote / shlex.quote for one word. */
export function shQuote(word: string): string {
  if (word === '') return "''";
  if (!UNSAFE.test(word)) return word;
  return "'" + word.replace(/'/g, `'"'"'`) + "'";
}

/** runprocess.shell_quote: joins argv for display; '' becomes "" as buildbot-worker does. */
export function shellQuote(argv: string[]): string {
  return argv.map((w) => (w === '' ? '""' : shQuote(w))).join(' ');
}
