/**
 * Transports turn an address into a byte stream. Every transport carries the
 * same frames; only how the stream is opened differs.
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import type * as Tls from 'node:tls';
import { type Duplex, Stream } from 'node:stream';
import { STANDARD_BAUD_RATES, openSerialLine, serialBytesPerSecond } from './serial-line';

export type NetEndpoint =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'tls'; host: string; port: number };

/**
 * A serial line: the device, its rate (8N1), and on the master the one worker
 * that may authenticate on it. `rtscts` asks for hardware flow control.
 */
export interface SerialEndpoint {
  kind: 'serial';
  path: string;
  baud: number;
  worker?: string;
  rtscts?: boolean;
}

export type Endpoint = NetEndpoint | SerialEndpoint;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const DEFAULT_BAUD = 115200;

/**
 * node:tls, loaded by the first tls endpoint: an agent on tcp or a serial
 * line never pays for it (1.5 MB of memory on Node 20, 7 MB on the Node 24
 * of the single binary).
 */
const tls = (): typeof Tls => require('node:tls') as typeof Tls;

/**
 * Parses tcp://HOST:PORT, tls://HOST:PORT (IPv6 hosts in brackets) or
 * serial:DEVICE?baud=N[&worker=NAME][&rtscts=1]. `use` is 'listen' for the
 * master's addresses: a serial line there must name its worker.
 */
export function parseEndpoint(url: string, use: 'connect' | 'listen' = 'connect'): Endpoint {
  if (url.startsWith('serial:')) return parseSerial(url, use);
  const match = /^(tcp|tls):\/\/(\[[^\]]+\]|[^:/]*):(\d+)\/?$/.exec(url);
  if (!match) {
    throw new UsageError(`'${url}' is not an address like tcp://HOST:PORT or tls://HOST:PORT or serial:DEVICE?baud=N`);
  }
  const port = Number(match[3]);
  if (port > 65535) throw new UsageError(`port ${port} in '${url}' is out of range`);
  const host = match[2].replace(/^\[(.*)\]$/, '$1') || '0.0.0.0';
  return { kind: match[1] as 'tcp' | 'tls', host, port };
}

function parseSerial(url: string, use: 'connect' | 'listen'): SerialEndpoint {
  const rest = url.slice('serial:'.length).replace(/^\/\/(?=\/)/, '');
  const q = rest.indexOf('?');
  const path = q < 0 ? rest : rest.slice(0, q);
  if (!path) throw new UsageError(`'${url}' names no device: write serial:/dev/ttyUSB0?baud=115200`);
  const query = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1));
  const endpoint: SerialEndpoint = { kind: 'serial', path, baud: DEFAULT_BAUD };
  for (const [key, value] of query) {
    if (key === 'baud') {
      const baud = Number(value);
      if (!/^\d+$/.test(value) || !STANDARD_BAUD_RATES.includes(baud)) {
        throw new UsageError(`baud=${value} in '${url}' is not a baud rate (use one of ${STANDARD_BAUD_RATES.join(', ')})`);
      }
      endpoint.baud = baud;
    } else if (key === 'worker') {
      if (use !== 'listen') throw new UsageError(`worker= in '${url}' belongs on the master's --listen, not here`);
      if (!value) throw new UsageError(`worker= in '${url}' is empty`);
      endpoint.worker = value;
    } else if (key === 'rtscts') {
      if (!/^(0|1|true|false|yes|no)$/.test(value)) throw new UsageError(`rtscts=${value} in '${url}' must be 1 or 0`);
      if (/^(1|true|yes)$/.test(value)) endpoint.rtscts = true;
    } else {
      throw new UsageError(`'${key}' in '${url}' is not a serial line setting (baud, worker, rtscts)`);
    }
  }
  if (use === 'listen' && endpoint.worker === undefined) {
    throw new UsageError(`'${url}' must name the worker that uses the line: add &worker=NAME`);
  }
  return endpoint;
}

export function describeEndpoint(e: Endpoint): string {
  if (e.kind === 'serial') {
    return `serial:${e.path}?baud=${e.baud}${e.worker !== undefined ? `&worker=${encodeURIComponent(e.worker)}` : ''}${e.rtscts ? '&rtscts=1' : ''}`;
  }
  return `${e.kind}://${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

/**
 * An opened byte stream and what the session should know about the line:
 * whether it may lose or corrupt bytes (serial) and its rate, when known.
 */
export interface OpenedTransport {
  transport: Duplex;
  lossy: boolean;
  bytesPerSecond?: number;
}

/** A bare stream is a reliable one of unknown rate (TCP, TLS, a test pipe). */
export function asOpenedTransport(opened: Duplex | OpenedTransport): OpenedTransport {
  return opened instanceof Stream ? { transport: opened, lossy: false } : opened;
}

export interface ConnectOptions {
  /** tls: a CA bundle or the pinned certificate of the master. */
  ca?: string;
}

/**
 * Opens the endpoint: connects (tcp, tls) or opens the device (serial, in pure
 * JavaScript); resolves with the stream and what is known about the line.
 */
export async function openEndpoint(endpoint: Endpoint, options: ConnectOptions = {}): Promise<OpenedTransport> {
  if (endpoint.kind === 'serial') {
    const transport = await openSerialLine(endpoint.path, { baud: endpoint.baud, rtscts: endpoint.rtscts });
    return { transport, lossy: true, bytesPerSecond: serialBytesPerSecond(endpoint.baud) };
  }
  return { transport: await connectNet(endpoint, options), lossy: false };
}

/** Opens a stream to the endpoint; resolves once it is connected (serial: once the device is open). */
export async function connect(endpoint: Endpoint, options: ConnectOptions = {}): Promise<Duplex> {
  return (await openEndpoint(endpoint, options)).transport;
}

function connectNet(endpoint: NetEndpoint, options: ConnectOptions): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket =
      endpoint.kind === 'tcp'
        ? net.connect({ host: endpoint.host, port: endpoint.port })
        : tls().connect({
            host: endpoint.host,
            port: endpoint.port,
            servername: net.isIP(endpoint.host) ? undefined : endpoint.host,
            ca: options.ca ? readFileSync(options.ca) : undefined,
          });
    const ready = endpoint.kind === 'tcp' ? 'connect' : 'secureConnect';
    socket.once(ready, () => {
      socket.off('error', reject);
      if (socket instanceof net.Socket) socket.setNoDelay(true);
      socket.setKeepAlive(true, 30_000);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export interface ListenOptions<T> {
  /** tls: PEM certificate and key files. */
  cert?: string;
  key?: string;
  /**
   * Called at every TCP accept, before TLS (the master's front door,
   * master-plugin/front-door.ts, whose timer covers TLS too); what it returns
   * comes to onStream with the stream. It may destroy the socket.
   */
  onAccept?: (socket: net.Socket) => T;
}

export interface Listener {
  readonly address: Endpoint;
  close(): Promise<void>;
}

/**
 * Listens on a tcp or tls endpoint; calls onStream for every accepted
 * connection, once TLS is up. Serial lines are opened by the master plugin
 * (master-plugin/serial-listener.ts, through TetherHub.listen).
 */
export function listen<T = undefined>(
  endpoint: Endpoint,
  options: ListenOptions<T>,
  onStream: (stream: Duplex, peer: string, accepted: T | undefined) => void,
): Promise<Listener> {
  if (endpoint.kind === 'serial') {
    throw new UsageError(`${describeEndpoint(endpoint)}: serial lines are listened on by the master (TetherHub.listen)`);
  }
  if (endpoint.kind === 'tls' && (!options.cert || !options.key)) throw new UsageError(`${describeEndpoint(endpoint)} needs --cert and --key`);
  // TLS runs on sockets this server accepts (and hands to the TLS server), so that what
  // happens before and during TLS is seen: a socket that never starts TLS is still counted.
  const secure = endpoint.kind === 'tls' ? tls().createServer({ cert: readFileSync(options.cert!), key: readFileSync(options.key!) }) : null;
  /** Streams handed on (TCP sockets, TLS sockets once up): ended gracefully at close. */
  const streams = new Set<net.Socket>();
  /** Sockets in their TLS handshake, with what onAccept returned, by peer address (the TLS socket has the same). */
  const inTls = new Map<string, { socket: net.Socket; token: T | undefined }>();
  const handOn = (stream: net.Socket, peer: string, token: T | undefined) => {
    streams.add(stream);
    stream.once('close', () => streams.delete(stream));
    onStream(stream, peer, token);
  };
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined); // the stream's owner hears of it too; an early reset must not crash the master
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const token = options.onAccept?.(socket);
    if (socket.destroyed) return;
    socket.setNoDelay(true);
    if (!secure) {
      handOn(socket, peer, token);
      return;
    }
    inTls.set(peer, { socket, token });
    socket.once('close', () => inTls.delete(peer));
    secure.emit('connection', socket);
  });
  secure?.on('secureConnection', (socket: Tls.TLSSocket) => {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const opening = inTls.get(peer);
    inTls.delete(peer);
    if (opening) handOn(socket, peer, opening.token);
    else socket.destroy(); // closed meanwhile
  });
  // Node reports a failed or timed-out TLS handshake here but leaves the socket open.
  secure?.on('tlsClientError', (_error: Error, socket: Tls.TLSSocket) => socket.destroy());
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'EADDRINUSE'
          ? new UsageError(`${describeEndpoint(endpoint)} is already in use: stop what listens there or choose another port`)
          : error,
      );
    });
    server.listen(endpoint.port, endpoint.host, () => {
      const bound = server.address() as net.AddressInfo;
      resolve({
        address: { ...endpoint, port: bound.port },
        // Streams end gracefully, so a last ERROR frame still reaches the agent; the rest is cut.
        close: () =>
          new Promise<void>((done) => {
            for (const stream of streams) stream.end();
            for (const { socket } of inTls.values()) socket.destroy();
            const stragglers = setTimeout(() => {
              for (const stream of streams) stream.destroy();
            }, 1000);
            server.close(() => {
              clearTimeout(stragglers);
              done();
            });
          }),
      });
    });
  });
}
