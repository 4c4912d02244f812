/**
 * Path handling shared by the commands: Python's posixpath.join / dirname /
 * expanduser and os.makedirs, and the argument translation buildbot does
 * before a command sees its arguments (buildbot_worker/pb.py
 * protocol_args_setup for PB, buildbot/worker/protocols/msgpack.py
 * remoteStartCommand for msgpack). Master 3.7 sends the PB-style names
 * (dir, fromdir/todir, file, workdir + workersrc/workerdest); the msgpack
 * flavour has already turned them into absolute paths/from_path/to_path/path.
 * Both are accepted: whichever is present is joined onto io.basedir, and an
 * absolute path stays what it is (os.path.join semantics).
 */
import * as fs from 'fs';
import * as os from 'os';
import type { Args } from './command';
import { CommandFailure } from './command';
import { reprStr } from './pyrepr';

/** posixpath.join: an absolute component restarts the path; '' adds a trailing '/'. */
export function pathJoin(first: string, ...rest: string[]): string {
  let path = first;
  for (const part of rest) {
    if (part.startsWith('/')) path = part;
    else if (path === '' || path.endsWith('/')) path += part;
    else path += '/' + part;
  }
  return path;
}

/** posixpath.dirname. */
export function pathDirname(p: string): string {
  const i = p.lastIndexOf('/') + 1;
  let head = p.slice(0, i);
  if (head && head !== '/'.repeat(head.length)) head = head.replace(/\/+$/, '');
  return head;
}

/** posixpath.expanduser for '~' and '~/...' ('~user' is left alone). */
export function expandUser(p: string): string {
  if (p !== '~' && !p.startsWith('~/')) return p;
  const home = process.env.HOME ?? os.homedir();
  const rest = p.slice(1);
  return home === '/' ? rest || '/' : home.replace(/\/+$/, '') + rest;
}

export function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch {
    return false;
  }
}

export function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function lexists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** os.makedirs(name) (exist_ok=False), same recursion and errors as Python's. */
export function makedirs(name: string, mode = 0o777): void {
  let [head, tail] = splitPath(name);
  if (!tail) [head, tail] = splitPath(head);
  if (head && tail && !exists(head)) {
    try {
      makedirs(head, mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (tail === '.') return;
  }
  fs.mkdirSync(name, { mode });
}

/** posixpath.split. */
function splitPath(p: string): [string, string] {
  const i = p.lastIndexOf('/') + 1;
  let head = p.slice(0, i);
  const tail = p.slice(i);
  if (head && head !== '/'.repeat(head.length)) head = head.replace(/\/+$/, '');
  return [head, tail];
}

/** shutil.which: the first executable `name` on PATH, or null. */
export function which(name: string, pathEnv = process.env.PATH ?? ''): string | null {
  if (name.includes('/')) return isExecutable(name) ? name : null;
  for (const dir of pathEnv.split(':')) {
    const candidate = pathJoin(dir || '.', name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** A Python KeyError, as buildbot-worker fails when an argument it indexes is absent. */
export function keyError(name: string): CommandFailure {
  return new CommandFailure(`KeyError: ${reprStr(name)}`);
}

function str(args: Args, key: string): string {
  const v = args[key];
  if (v === undefined) throw keyError(key);
  if (typeof v !== 'string') {
    throw new CommandFailure(`TypeError: argument ${reprStr(key)} must be str, not ${typeof v}`);
  }
  return v;
}

function strList(args: Args, key: string): string[] {
  const v = args[key];
  if (v === undefined) throw keyError(key);
  const list = Array.isArray(v) ? v : [v];
  for (const item of list) {
    if (typeof item !== 'string') {
      throw new CommandFailure(`TypeError: ${reprStr(key)} entries must be str`);
    }
  }
  return list as string[];
}

/**
 * The worker-side arguments each command reads, after buildbot's translation:
 * returns a copy of args with paths/path/from_path/to_path/workdir absolute
 * (joined onto basedir).
 */
export function resolveArgs(command: string, args: Args, basedir: string): Args {
  const out: Args = { ...args };
  const join = (...parts: string[]) => pathJoin(basedir, ...parts);
  switch (command) {
    case 'mkdir':
    case 'rmdir':
      if ('paths' in args) out.paths = strList(args, 'paths').map((p) => join(p));
      else if ('dir' in args) {
        out.paths = strList(args, 'dir').map((p) => join(p));
        delete out.dir;
      }
      break;
    case 'cpdir':
      if ('from_path' in args) out.from_path = join(str(args, 'from_path'));
      else if ('fromdir' in args) out.from_path = join(str(args, 'fromdir'));
      if ('to_path' in args) out.to_path = join(str(args, 'to_path'));
      else if ('todir' in args) out.to_path = join(str(args, 'todir'));
      delete out.fromdir;
      delete out.todir;
      break;
    case 'stat':
      if ('path' in args) out.path = join(str(args, 'path'));
      else if ('file' in args) {
        const workdir = args.workdir === undefined ? '' : str(args, 'workdir');
        out.path = join(workdir, str(args, 'file'));
        delete out.file;
      }
      break;
    case 'glob':
    case 'rmfile':
      if ('path' in args) out.path = join(str(args, 'path'));
      break;
    case 'listdir':
      if ('path' in args) out.path = join(str(args, 'path'));
      else if ('dir' in args) {
        out.path = join(str(args, 'dir'));
        delete out.dir;
      }
      break;
    case 'shell':
      if ('workdir' in args) out.workdir = join(str(args, 'workdir'));
      break;
    case 'upload_file':
    case 'upload_directory':
    case 'download_file': {
      const key = command === 'download_file' ? 'workerdest' : 'workersrc';
      if ('path' in args) out.path = join(str(args, 'path'));
      else if (key in args) {
        out.path = join(str(args, 'workdir'), expandUser(str(args, key)));
        delete out.workdir;
        delete out[key];
      }
      break;
    }
    default:
      break;
  }
  return out;
}
