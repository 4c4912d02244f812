/**
 * What tests and benchmarks (bench/) both need and that is about neither
 * Buildbot nor the protocol: waiting (sleep, tick, waitFor, withTimeout),
 * loopback ports (freePort, listening), temporary directories and the
 * repository's root. Nothing here runs at import time; it imports no tap, so
 * that bench/ can use it.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves after the I/O callbacks already queued have run. */
export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Thrown from a waitFor callback to stop waiting at once. */
export class WaitAbort extends Error {}

/**
 * Polls fn until it returns something other than undefined/false and resolves
 * with that (errors are retried, WaitAbort is not); after timeoutMs, throws
 * "timed out after N ms waiting for <what>" with fn's last error.
 */
export async function waitFor<T>(
  what: string, fn: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 30_000, intervalMs = 200 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      if (e instanceof WaitAbort) throw e;
      lastError = e;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

/** The promise's result, or "timed out after N ms waiting for <what>" if it has not settled within ms. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Starts `server` listening on 127.0.0.1 at a port the OS picks; resolves with that port. */
export async function listenLoopback(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** A TCP server on loopback whose close() also ends its connections. */
export interface LoopbackServer {
  port: number;
  /** Destroys the sockets the server accepted and those its handler tracked, then closes the server. */
  close(): Promise<void>;
}

/**
 * A loopback server handing each accepted socket to `onConnection`, with
 * `track` for the sockets the handler opens itself (a relay's upstream), so
 * that close() leaves nothing open.
 */
export async function loopbackServer(
  onConnection: (socket: net.Socket, track: (socket: net.Socket) => void) => void,
): Promise<LoopbackServer> {
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server = net.createServer((socket) => {
    track(socket);
    onConnection(socket, track);
  });
  return {
    port: await listenLoopback(server),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Waits until something listens on the TCP port (read from /proc: probing it would be a connection). */
export async function listening(port: number): Promise<void> {
  if (!fs.existsSync('/proc/net/tcp')) return sleep(1000);
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const bound = () =>
    ['/proc/net/tcp', '/proc/net/tcp6'].some((f) => {
      try {
        return fs.readFileSync(f, 'utf8').split('\n').some((l) => {
          const fields = l.trim().split(/\s+/);
          return fields[1]?.endsWith(hex) && fields[3] === '0A'; // 0A: LISTEN
        });
      } catch {
        return false;
      }
    });
  await waitFor(`a listener on port ${port}`, bound, { timeoutMs: 20_000, intervalMs: 20 });
}

/** A new empty directory under the OS temp dir (the caller removes it). */
export function makeTempDir(prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A new empty directory under the OS temp dir, removed with everything in it when the test ends. */
export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix: string): Promise<string> {
  const dir = await makeTempDir(prefix);
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
