/**
 * Transports turn an address into a byte stream. Every transport carries the
 * same frames; only how the stream is opened differs.
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
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
export interface OpenedStream {
  stream: Duplex;
  lossy: boolean;
  bytesPerSecond?: number;
}

/** A bare stream is a reliable one of unknown rate (TCP, TLS, a test pipe). */
export function asOpenedStream(opened: Duplex | OpenedStream): OpenedStream {
  return opened instanceof Stream ? { stream: opened, lossy: false } : opened;
}

export interface ConnectOptions {
  /** tls: a CA bundle or the pinned certificate of the master. */
  ca?: string;
}

/**
 * Opens the endpoint: connects (tcp, tls) or opens the device (serial, in pure
 * JavaScript); resolves with the stream and what is known about the line.
 */
export async function openEndpoint(endpoint: Endpoint, options: ConnectOptions = {}): Promise<OpenedStream> {
  if (endpoint.kind === 'serial') {
    const stream = await openSerialLine(endpoint.path, { baud: endpoint.baud, rtscts: endpoint.rtscts });
    return { stream, lossy: true, bytesPerSecond: serialBytesPerSecond(endpoint.baud) };
  }
  return { stream: await connectNet(endpoint, options), lossy: false };
}

/** Opens a stream to the endpoint; resolves once it is connected (serial: once the device is open). */
export async function connect(endpoint: Endpoint, options: ConnectOptions = {}): Promise<Duplex> {
  return (await openEndpoint(endpoint, options)).stream;
}

function connectNet(endpoint: NetEndpoint, options: ConnectOptions): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket =
      endpoint.kind === 'tcp'
        ? net.connect({ host: endpoint.host, port: endpoint.port })
        : tls.connect({
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

export interface ListenOptions {
  /** tls: PEM certificate and key files. */
  cert?: string;
  key?: string;
}

export interface Listener {
  readonly address: Endpoint;
  close(): Promise<void>;
}

/**
 * Listens on a tcp or tls endpoint; calls onStream for every accepted
 * connection. Serial lines are opened by the master plugin
 * (master-plugin/serial-listener.ts, through TetherHub.listen).
 */
export function listen(endpoint: Endpoint, options: ListenOptions, onStream: (stream: Duplex, peer: string) => void): Promise<Listener> {
  if (endpoint.kind === 'serial') {
    throw new UsageError(`${describeEndpoint(endpoint)}: serial lines are listened on by the master (TetherHub.listen)`);
  }
  let server: net.Server;
  if (endpoint.kind === 'tls') {
    if (!options.cert || !options.key) throw new UsageError(`${describeEndpoint(endpoint)} needs --cert and --key`);
    server = tls.createServer({ cert: readFileSync(options.cert), key: readFileSync(options.key) }, (socket) => {
      onStream(socket, `${socket.remoteAddress}:${socket.remotePort}`);
    });
  } else {
    server = net.createServer((socket) => {
      socket.setNoDelay(true);
      onStream(socket, `${socket.remoteAddress}:${socket.remotePort}`);
    });
  }
  const sockets = new Set<net.Socket>();
  server.on(endpoint.kind === 'tls' ? 'secureConnection' : 'connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
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
        // Sockets end gracefully, so a last ERROR frame still reaches the agent; stragglers are cut.
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.end();
            const stragglers = setTimeout(() => {
              for (const socket of sockets) socket.destroy();
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
