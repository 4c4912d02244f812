/**
 * Python 3.11's glob.glob(pathname, recursive=True) and fnmatch, as
 * buildbot-worker's 'glob' command calls them:
 *  - '*', '?', '[seq]', '[!seq]' per path component, case-sensitive;
 *  - names starting with '.' are only matched by patterns starting with '.';
 *  - a '**' component matches zero or more directories (following symlinks);
 *  - results come in directory order (not sorted), directories are listed
 *    lazily and unreadable ones are skipped silently;
 *  - a pattern without magic is returned as is when it exists (lexists).
 */
import * as fs from 'fs';
import { isDir, lexists, pathJoin } from './paths';

const MAGIC = /[*?[]/;

function hasMagic(s: string): boolean {
  return MAGIC.test(s);
}

function isHidden(name: string): boolean {
  return name.startsWith('.');
}

function isRecursive(pattern: string): boolean {
  return pattern === '**';
}

/** posixpath.split. */
function split(p: string): [string, string] {
  const i = p.lastIndexOf('/') + 1;
  let head = p.slice(0, i);
  const tail = p.slice(i);
  if (head && head !== '/'.repeat(head.length)) head = head.replace(/\/+$/, '');
  return [head, tail];
}

/** glob._join: empty parts are not joined. */
function join(dirname: string, basename: string): string {
  if (!dirname || !basename) return dirname || basename;
  return pathJoin(dirname, basename);
}

const REGEX_SPECIAL = /[\\^$.*+?()[\]{}|/]/g;

function escapeRegex(s: string): string {
  return s.replace(REGEX_SPECIAL, '\\$&');
}

function escapeClass(s: string): string {
  return s.replace(/[\\\]\[^-]/g, '\\$&');
}

/** fnmatch.translate, producing a JavaScript RegExp with the same matches. */
export function fnmatchRegExp(pat: string): RegExp {
  const chars = [...pat];
  let re = '';
  let i = 0;
  const n = chars.length;
  let lastStar = false;
  while (i < n) {
    const c = chars[i++];
    if (c === '*') {
      if (!lastStar) re += '.*';
      lastStar = true;
      continue;
    }
    lastStar = false;
    if (c === '?') {
      re += '.';
    } else if (c === '[') {
      let j = i;
      if (j < n && chars[j] === '!') j++;
      if (j < n && chars[j] === ']') j++;
      while (j < n && chars[j] !== ']') j++;
      if (j >= n) {
        re += '\\[';
        continue;
      }
      let negate = false;
      let k = i;
      if (chars[k] === '!') {
        negate = true;
        k++;
      }
      const body = chars.slice(k, j);
      i = j + 1;
      // Split into ranges exactly as fnmatch does: a '-' between two
      // characters is a range, except right after the opening bracket.
      const items: Array<[string, string]> = [];
      let m = 0;
      while (m < body.length) {
        if (m + 2 < body.length && body[m + 1] === '-') {
          items.push([body[m], body[m + 2]]);
          m += 3;
        } else {
          items.push([body[m], body[m]]);
          m += 1;
        }
      }
      // Python drops empty (reversed) ranges; a set left empty never matches.
      const valid = items.filter(([lo, hi]) => lo <= hi);
      if (valid.length === 0) {
        re += negate ? '.' : '(?!)';
        continue;
      }
      const cls = valid
        .map(([lo, hi]) => (lo === hi ? escapeClass(lo) : `${escapeClass(lo)}-${escapeClass(hi)}`))
        .join('');
      re += `[${negate ? '^' : ''}${cls}]`;
    } else {
      re += escapeRegex(c);
    }
  }
  return new RegExp(`^(?:${re})$`, 'su');
}

function filter(names: string[], pattern: string): string[] {
  const re = fnmatchRegExp(pattern);
  return names.filter((name) => re.test(name));
}

/** glob._iterdir: names in directory order; errors end the listing quietly. */
function listdir(dirname: string, dironly: boolean): string[] {
  const names: string[] = [];
  let dir: fs.Dir;
  try {
    dir = fs.opendirSync(dirname || '.');
  } catch {
    return names;
  }
  try {
    for (let e = dir.readSync(); e; e = dir.readSync()) {
      if (!dironly) names.push(e.name);
      else {
        let d = e.isDirectory();
        if (!d && e.isSymbolicLink()) d = isDir(pathJoin(dirname || '.', e.name));
        if (d) names.push(e.name);
      }
    }
  } catch {
    // as os.scandir raising mid-way: what was read so far
  } finally {
    dir.closeSync();
  }
  return names;
}

function glob0(dirname: string, basename: string): string[] {
  if (basename) {
    if (lexists(join(dirname, basename))) return [basename];
  } else if (isDir(dirname)) {
    return [basename];
  }
  return [];
}

function glob1(dirname: string, pattern: string, dironly: boolean): string[] {
  let names = listdir(dirname, dironly);
  if (!isHidden(pattern)) names = names.filter((x) => !isHidden(x));
  return filter(names, pattern);
}

function* rlistdir(dirname: string, dironly: boolean): Generator<string> {
  for (const x of listdir(dirname, dironly)) {
    if (isHidden(x)) continue;
    yield x;
    const p = dirname ? join(dirname, x) : x;
    for (const y of rlistdir(p, dironly)) yield join(x, y);
  }
}

function* glob2(dirname: string, _pattern: string, dironly: boolean): Generator<string> {
  yield '';
  yield* rlistdir(dirname, dironly);
}

function* iglobInner(pathname: string, dironly: boolean): Generator<string> {
  const [dirname, basename] = split(pathname);
  if (!hasMagic(pathname)) {
    if (basename) {
      if (lexists(pathname)) yield pathname;
    } else if (isDir(dirname)) {
      yield pathname;
    }
    return;
  }
  if (!dirname) {
    if (isRecursive(basename)) yield* glob2('', basename, dironly);
    else yield* glob1('', basename, dironly);
    return;
  }
  const dirs: Iterable<string> =
    dirname !== pathname && hasMagic(dirname) ? iglobInner(dirname, true) : [dirname];
  let globInDir: (d: string, p: string, dironly: boolean) => Iterable<string>;
  if (hasMagic(basename)) globInDir = isRecursive(basename) ? glob2 : glob1;
  else globInDir = glob0;
  for (const d of dirs) {
    for (const name of globInDir(d, basename, dironly)) yield pathJoin(d, name);
  }
}

/** glob.glob(pathname, recursive=True). */
export function pyGlob(pathname: string): string[] {
  const out = [...iglobInner(pathname, false)];
  // iglob skips the empty string '**' yields first for a pattern starting with it
  if ((!pathname || isRecursive(pathname.slice(0, 2))) && out.length && out[0] === '') out.shift();
  return out;
}
