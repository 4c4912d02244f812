/**
 * Reading a JSON file that may hold secrets (tether-master's workers file, an
 * agent's --config): an error names the file and, for a syntax error, the
 * line and column, but never quotes the text. (Node 20's JSON.parse quotes
 * the text around a syntax error in its message, and that text is often the
 * secret.)
 */
import { readFileSync } from 'node:fs';
import { UsageError } from './transport';

/**
 * Reads and parses `source` (a path, or 0 for standard input); `what` names
 * it in errors, e.g. "the workers file /etc/tether/workers.json".
 */
export function readJsonFile(source: string | number, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(source, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${what}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    const at = syntaxErrorOffset(text);
    const where = at === null ? '' : ` at ${lineAndColumn(text, at)}`;
    throw new UsageError(`${what} is not valid JSON${where} (its text is not shown: it may hold secrets)`);
  }
}

const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const SCALAR = new RegExp(`${STRING.source}|-?(?:0|[1-9]\\d*)(?:\\.\\d+)?(?:[eE][+-]?\\d+)?|true|false|null`, 'y');

/**
 * Where `text` stops being JSON (RFC 8259), as an offset; null if it is JSON
 * or nests too deeply to tell. JSON.parse does not always say where, and
 * where it does it quotes the text.
 */
export function syntaxErrorOffset(text: string): number | null {
  let i = 0;
  const space = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const take = (token: RegExp | string) => {
    space();
    if (typeof token === 'string') {
      if (text[i] !== token) throw i;
      i++;
      return;
    }
    token.lastIndex = i;
    if (!token.test(text)) throw i;
    i = token.lastIndex;
  };
  const value = (): void => {
    space();
    const open = text[i];
    if (open !== '{' && open !== '[') return take(SCALAR);
    const close = open === '{' ? '}' : ']';
    i++;
    space();
    if (text[i] === close) {
      i++;
      return;
    }
    for (;;) {
      if (open === '{') {
        take(STRING);
        take(':');
      }
      value();
      space();
      if (text[i] === close) {
        i++;
        return;
      }
      take(',');
    }
  };
  try {
    value();
    space();
    return i < text.length ? i : null;
  } catch (at) {
    return typeof at === 'number' ? at : null;
  }
}

/** "line L, column C" (both from 1) of an offset in `text`. */
function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n');
  return `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
}
