/**
 * Buildbot's msgpack worker protocol ('msgpack_experimental_v7', Buildbot 3.x), the
 * worker's end. Facts (from buildbot/worker/protocols/manager/msgpack.py and
 * buildbot_worker/msgpack.py, 3.7):
 *
 * - Transport: one WebSocket to ws://HOST:PORT/ (buildbot-worker asks for '/'; the
 *   master ignores the path). Auth is HTTP Basic on the upgrade request,
 *   'Authorization: Basic base64(name:password)'; a bad name/password gets HTTP 401.
 *   The name may not contain ':'.
 * - Every message is one binary frame holding a msgpack map with 'op' and
 *   'seq_number'. Each side numbers its own requests from 0; the answer is
 *   {op: 'response', seq_number: <the request's>, result: <value>} plus
 *   is_exception: true (result = error text) on failure. Text frames are ignored.
 * - Master -> worker requests: print {message}; keepalive; get_worker_info;
 *   set_worker_settings {args: {newline_re, max_line_length, buffer_timeout,
 *   buffer_size}}; start_command {command_id, command_name, args, builder_name?};
 *   interrupt_command {command_id, why, builder_name}; shutdown.
 *   There is no set_builder_list/get_commands: the master runs listdir/stat/rmdir/
 *   mkdir through start_command itself, and reads worker_commands from the info.
 * - Worker -> master requests (all carry command_id): update {args: [[key, value],
 *   ...]}; complete {args: failure text or nil}; update_upload_file_write {args:
 *   bytes}; update_upload_file_close; update_upload_file_utime {access_time,
 *   modified_time}; update_upload_directory_write {args: bytes};
 *   update_upload_directory_unpack; update_read_file {length}; update_read_file_close.
 *   A worker-initiated 'keepalive' does not exist in 3.7 (the master answers
 *   "Command keepalive does not exist.").
 */
import WebSocket from 'ws';
import { encode, decode } from '@msgpack/msgpack';
import { posix, win32 } from 'node:path';

/** buildbot_worker.commands.base.command_version in buildbot-worker 3.x. */
export const WORKER_COMMAND_VERSION = '3.1';

/** buildbot-worker's command registry names (remote_getCommands), each at command_version. */
export const WORKER_COMMAND_NAMES = [
  'shell',
  'uploadFile',
  'upload_file',
  'uploadDirectory',
  'upload_directory',
  'downloadFile',
  'download_file',
  'mkdir',
  'rmdir',
  'cpdir',
  'stat',
  'glob',
  'listdir',
  'rmfile',
] as const;

/** Old camelCase names a master may still use, mapped to the agent's names. */
export const COMMAND_ALIASES: Record<string, string> = {
  uploadFile: 'upload_file',
  uploadDirectory: 'upload_directory',
  downloadFile: 'download_file',
};

/**
 * The worker_commands Buildbot gets: the commands the agent reported in its
 * INFO (under each of Buildbot's names for them), or all of them for an agent
 * that reported none, so a step the agent cannot run is refused by Buildbot.
 */
export function workerCommands(reported?: unknown): Record<string, string> {
  const has = Array.isArray(reported) ? new Set(reported.filter((c) => typeof c === 'string')) : null;
  const out: Record<string, string> = {};
  for (const n of WORKER_COMMAND_NAMES) if (!has || has.has(COMMAND_ALIASES[n] ?? n)) out[n] = WORKER_COMMAND_VERSION;
  return out;
}

/** 'Basic base64(name:password)', as encode_http_authorization_header builds it. */
export function basicAuthHeader(name: string, password: string): string {
  if (name.includes(':')) throw new Error('worker name may not contain a colon (HTTP basic auth)');
  return 'Basic ' + Buffer.from(`${name}:${password}`, 'utf8').toString('base64');
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** 'posix' or 'nt' (Python's os.name), from what the agent reported. */
export function systemOf(info: Record<string, unknown>): 'posix' | 'nt' {
  const sys = str(info.system);
  if (sys === 'nt' || sys === 'posix') return sys;
  const os = (str(info.os) ?? str(info.platform) ?? '').toLowerCase();
  return os.startsWith('win') ? 'nt' : 'posix';
}

/** The basedir reported to Buildbot: the agent's own, or '.' when it reported none. */
export function reportedBasedir(info: Record<string, unknown>): string {
  return str(info.basedir) ?? '.';
}

/**
 * The get_worker_info answer, in buildbot-worker's shape (BotBase.remote_getWorkerInfo):
 * everything the agent reported (Buildbot stores all keys but environ and
 * worker_commands as worker properties), plus admin, host, access_uri, version
 * (the four Buildbot keeps in its DB), environ, system, basedir, numcpus,
 * worker_commands and delete_leftover_dirs (the 3.7 master indexes that one without
 * a default, so it must be present).
 */
export function buildWorkerInfo(info: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(info)) {
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue;
    out[k] = v;
  }
  out.admin = str(info.admin) ?? null;
  out.host = str(info.host) ?? str(info.hostname) ?? null;
  out.access_uri = str(info.access_uri) ?? null;
  out.version = str(info.version) ?? null;
  const environ: Record<string, string> = {};
  if (info.environ && typeof info.environ === 'object') {
    for (const [k, v] of Object.entries(info.environ as Record<string, unknown>)) {
      if (typeof v === 'string') environ[k] = v;
    }
  }
  out.environ = environ;
  out.system = systemOf(info);
  out.basedir = reportedBasedir(info);
  const n = Number(info.numcpus);
  out.numcpus = Number.isInteger(n) && n > 0 ? n : 1;
  out.worker_commands = workerCommands(info.commands);
  out.delete_leftover_dirs = info.delete_leftover_dirs === true;
  return out;
}

/**
 * Workdir mapping. The 3.7 msgpack master joins every path itself before sending
 * start_command: path_module.join(info.basedir, builder.builddir, ...) for shell's
 * 'workdir', 'path' (stat, glob, listdir, rmfile, upload_file, upload_directory,
 * download_file), 'paths' (mkdir, rmdir) and 'from_path'/'to_path' (cpdir). The
 * bridge reports the agent's basedir, so each of those arrives as
 * "<agent basedir>/<builddir>/<...>"; the bridge strips "<agent basedir>/" (nothing
 * else: no normalisation) so the agent sees the same path relative to its basedir
 * ('.' for the basedir itself; '\\' becomes '/' for an 'nt' agent).
 * A path outside the basedir (an absolute workdir or workersrc in the step) is
 * passed on unchanged, for the agent to accept or refuse. Other arguments
 * (transfers' 'workdir', 'workersrc', 'workerdest'; shell's 'logfiles', relative
 * to the workdir) are left as Buildbot sent them.
 */
export class PathMapper {
  private readonly mod: typeof posix;
  private readonly base: string;

  constructor(basedir: string, system: 'posix' | 'nt') {
    this.mod = system === 'nt' ? win32 : posix;
    let b = basedir;
    while (b.length > 1 && /[\\/]$/.test(b) && !(system === 'nt' && /^[A-Za-z]:[\\/]$/.test(b))) {
      b = b.slice(0, -1);
    }
    this.base = b;
  }

  toAgent(p: unknown): unknown {
    if (typeof p !== 'string') return p;
    const nt = this.mod === win32;
    const same = (a: string, b: string): boolean => (nt ? a.toLowerCase() === b.toLowerCase() : a === b);
    let rest: string | null = null;
    if (this.base === '.') {
      // the master joined '.' (posixpath.join('.', 'b') == './b')
      if (p === '.') rest = '';
      else if (p.startsWith('./') || (nt && p.startsWith('.\\'))) rest = p.slice(2);
      else if (!this.mod.isAbsolute(p)) rest = p;
    } else if (same(p, this.base)) {
      rest = '';
    } else {
      const sepd = /[\\/]$/.test(this.base) ? this.base : this.base + (nt ? '\\' : '/');
      const prefixLen = sepd.length;
      const head = p.slice(0, prefixLen);
      if (same(head, sepd) || (nt && same(head.replace(/\//g, '\\'), sepd.replace(/\//g, '\\')))) {
        rest = p.slice(prefixLen);
      }
    }
    if (rest === null) return p;
    // Only the prefix goes: the rest stays as Buildbot built it (a glob's trailing '/' matters).
    if (nt) rest = rest.replace(/\\/g, '/');
    return rest === '' ? '.' : rest;
  }

  /** Rewrites the path arguments of one start_command (see the class comment). */
  mapArgs(command: string, args: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, unknown> = { ...args };
    switch (command) {
      case 'shell':
        if ('workdir' in out) out.workdir = this.toAgent(out.workdir);
        break;
      case 'mkdir':
      case 'rmdir':
        if (Array.isArray(out.paths)) out.paths = out.paths.map((x) => this.toAgent(x));
        if ('path' in out) out.path = this.toAgent(out.path);
        break;
      case 'cpdir':
        if ('from_path' in out) out.from_path = this.toAgent(out.from_path);
        if ('to_path' in out) out.to_path = this.toAgent(out.to_path);
        break;
      default:
        if ('path' in out) out.path = this.toAgent(out.path);
        break;
    }
    return out;
  }
}

export class ConnectionLostError extends Error {
  constructor(message = 'Buildbot connection lost') {
    super(message);
    this.name = 'ConnectionLostError';
  }
}

/** An is_exception response from the master. */
export class RemoteError extends Error {
  constructor(
    readonly op: string,
    message: string,
  ) {
    super(message);
    this.name = 'RemoteError';
  }
}

export type Msg = Record<string, unknown>;

/** Handles one master request; the resolved value is the response's 'result'. */
export type RequestHandler = (op: string, msg: Msg) => unknown | Promise<unknown>;

/**
 * Request/response framing over one WebSocket. Requests the worker sends are
 * numbered from 0; the pending map holds one entry per unanswered request.
 */
export class MsgpackPeer {
  private seq = 0;
  private readonly waiting = new Map<number, { op: string; resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private lost: Error | null = null;

  constructor(
    readonly ws: WebSocket,
    private readonly handler: RequestHandler,
    private readonly log: (line: string) => void,
  ) {
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('close', () => this.fail(new ConnectionLostError()));
  }

  get pending(): number {
    return this.waiting.size;
  }

  get isOpen(): boolean {
    return this.lost === null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one request; resolves with the master's result, rejects with RemoteError/ConnectionLostError. */
  request(op: string, fields: Msg = {}): Promise<unknown> {
    if (this.lost) return Promise.reject(this.lost);
    if (this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new ConnectionLostError());
    const seq = this.seq++;
    const payload = encode({ op, ...fields, seq_number: seq }, { ignoreUndefined: true });
    return new Promise<unknown>((resolve, reject) => {
      this.waiting.set(seq, { op, resolve, reject });
      this.ws.send(payload, { binary: true }, (err) => {
        if (err && this.waiting.delete(seq)) reject(new ConnectionLostError(`send failed: ${err.message}`));
      });
    });
  }

  private respond(seq: unknown, result: unknown, isException: boolean): void {
    if (!this.isOpen) return;
    const out: Msg = { op: 'response', seq_number: seq, result: result === undefined ? null : result };
    if (isException) out.is_exception = true;
    let payload: Uint8Array;
    try {
      payload = encode(out, { ignoreUndefined: true });
    } catch (e) {
      payload = encode({ op: 'response', seq_number: seq, result: `cannot encode result: ${(e as Error).message}`, is_exception: true });
    }
    this.ws.send(payload, { binary: true }, () => undefined);
  }

  private onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    if (!isBinary) {
      this.log('ignoring a text frame from Buildbot (the msgpack protocol uses binary frames)');
      return;
    }
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    let msg: Msg;
    try {
      const m = decode(buf);
      if (!m || typeof m !== 'object' || Array.isArray(m)) throw new Error('not a map');
      msg = m as Msg;
    } catch (e) {
      this.log(`undecodable message from Buildbot (${buf.length} bytes): ${(e as Error).message}`);
      return;
    }
    const op = msg.op;
    if (typeof op !== 'string' || !('seq_number' in msg)) {
      this.log(`invalid message from Buildbot (no op/seq_number): ${summarize(msg)}`);
      return;
    }
    if (op === 'response') {
      const seq = Number(msg.seq_number);
      const w = this.waiting.get(seq);
      if (!w) {
        this.log(`response for unknown request ${seq} from Buildbot`);
        return;
      }
      this.waiting.delete(seq);
      if (msg.is_exception) w.reject(new RemoteError(w.op, String(msg.result)));
      else w.resolve(msg.result);
      return;
    }
    const seq = msg.seq_number;
    let r: unknown;
    try {
      r = this.handler(op, msg);
    } catch (e) {
      this.respond(seq, errorText(e), true);
      return;
    }
    Promise.resolve(r).then(
      (result) => this.respond(seq, result, false),
      (e) => this.respond(seq, errorText(e), true),
    );
  }

  private fail(err: Error): void {
    if (!this.lost) this.lost = err;
    const w = [...this.waiting.values()];
    this.waiting.clear();
    for (const x of w) x.reject(err);
  }
}

export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** A short, password-free rendering of a message for logs. */
export function summarize(v: unknown, max = 200): string {
  let s: string;
  try {
    s = JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? `<${x.length} bytes>` : x));
  } catch {
    s = String(v);
  }
  return s.length > max ? s.slice(0, max) + '...' : s;
}

/** Bytes from a master result: bin -> Buffer, str -> UTF-8 (the master's unicode2bytes), nil -> null. */
export function resultBytes(v: unknown): Buffer | null {
  if (v === null || v === undefined) return null;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  throw new Error(`expected bytes from update_read_file, got ${typeof v}`);
}
