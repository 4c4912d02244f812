/**
 * The bridge's connection to Buildbot: one WebSocket to the master's msgpack
 * port, HTTP Basic auth on the upgrade, WebSocket pings, and the close.
 *
 * Contract:
 * - The Basic header holds the worker's secret: it goes in clear (ws://) only
 *   to loopback, elsewhere only inside TLS (wss://) to a master whose
 *   certificate verifies (buildbot-url.ts says which URLs; open() rejects the
 *   others before connecting). No redirect is followed.
 * - open() connects and resolves once accept() is called (the bridge calls it
 *   when Buildbot sends set_worker_settings). It rejects with a clear reason
 *   on a refusal (HTTP 401: unknown name or wrong password), on the master
 *   closing before that, or after connectTimeoutMs; the connection is then closed.
 * - A master silent for two ping periods is dropped.
 * - close(reason) says goodbye (close frame, terminated after 5 s). Whatever
 *   ends the connection, onClosed(reason) is called once, when the socket is
 *   gone, or at once if there never was one.
 */
import WebSocket from 'ws';
import { type Msg, MsgpackPeer, basicAuthHeader, errorText } from './buildbot-protocol';
import { buildbotUrl, loopbackLookup } from './buildbot-url';

export interface ConnectionOptions {
  /** ws:// (loopback only) or wss:// host:port of the master's msgpack_experimental_v7 port (a path is kept; default '/'). */
  url: string;
  /** wss: the CA bundle or pinned certificate (PEM) Buildbot's certificate must verify against (default: Node's CAs). */
  ca?: Buffer;
  workerName: string;
  password: string;
  connectTimeoutMs: number;
  /** WebSocket ping period (0 = off). */
  pingIntervalMs: number;
  /** Largest message accepted from Buildbot. */
  maxPayload: number;
  log: (line: string) => void;
  /** Answers one of the master's requests (its result, or a throw for an error answer). */
  handle: (op: string, msg: Msg) => unknown;
  onClosed: (reason: string) => void;
}

export class BuildbotConnection {
  /** The request/response layer, once open() was called. */
  peer: MsgpackPeer | null = null;
  private ws: WebSocket | null = null;
  private opening: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private opened = false;
  private accepted = false;
  private closed = false;
  private closingReason: string | null = null;
  private pingTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: ConnectionOptions) {}

  /** Closing or closed: no new commands, no new open(). */
  get isClosing(): boolean {
    return this.closed || this.closingReason !== null;
  }

  open(): Promise<void> {
    if (this.isClosing) return Promise.reject(new Error('bridge already closed'));
    const { opts } = this;
    let url: URL;
    let auth: string;
    try {
      url = buildbotUrl(opts.url);
      auth = basicAuthHeader(opts.workerName, opts.password);
    } catch (e) {
      return Promise.reject(new Error(`bad Buildbot URL or worker name: ${errorText(e)}`));
    }
    const where = url.toString();
    this.opened = true;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => this.settleOpen(new Error(`Buildbot did not accept the worker within ${opts.connectTimeoutMs} ms`)),
        opts.connectTimeoutMs,
      );
      timer.unref?.();
      this.opening = {
        resolve: () => {
          clearTimeout(timer);
          this.accepted = true;
          opts.log(`Buildbot at ${where} accepted worker '${opts.workerName}'`);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          opts.log(`could not attach to Buildbot at ${where}: ${err.message}`);
          this.close(`start failed: ${err.message}`);
          reject(err);
        },
      };

      opts.log(`connecting to ${where}`);
      const ws = new WebSocket(where, {
        headers: { Authorization: auth },
        perMessageDeflate: false,
        maxPayload: opts.maxPayload,
        handshakeTimeout: opts.connectTimeoutMs,
        // in clear, "localhost" must lead to loopback whatever the resolver says
        lookup: url.protocol === 'ws:' ? loopbackLookup : undefined,
        ca: opts.ca,
        // explicit: NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment must not hand the secret to any certificate
        rejectUnauthorized: true,
        // a redirect would take the header to a URL Buildbot names, not one checked here
        followRedirects: false,
      });
      this.ws = ws;
      this.peer = new MsgpackPeer(ws, opts.handle, opts.log);
      ws.on('error', (err) => {
        const m = /Unexpected server response: (\d+)/.exec(err.message);
        const text =
          m && m[1] === '401'
            ? `Buildbot refused worker '${opts.workerName}' (HTTP 401: unknown worker name or wrong password)`
            : m
              ? `Buildbot refused the WebSocket upgrade (HTTP ${m[1]})`
              : untrustedCertificate(err)
                ? `Buildbot's TLS certificate is not trusted (${err.message}): --buildbot-ca FILE names the CA bundle or the certificate to trust`
                : `WebSocket error: ${err.message}`;
        if (this.opening) this.settleOpen(new Error(text));
        else opts.log(text);
      });
      ws.on('open', () => {
        opts.log('WebSocket open; waiting for Buildbot to attach the worker');
        this.startPing(ws);
      });
      ws.on('close', (code, reasonBuf) => {
        const reason = reasonBuf.toString('utf8');
        const said = `code ${code}${reason ? `, ${reason}` : ''}`;
        // why it ended, as known before a failed open() adds its own reason
        const why = this.closingReason ?? `Buildbot closed the connection (${said})`;
        this.settleOpen(
          new Error(
            `Buildbot closed the connection before attaching the worker (${said}; ` +
              'unknown worker, a duplicate connection for this worker, or a master error - see the master log)',
          ),
        );
        this.onSocketClosed(why);
      });
    });
  }

  /** Buildbot accepted the worker: open() resolves. */
  accept(): void {
    this.settleOpen(null);
  }

  close(reason: string): void {
    if (this.closed) return;
    if (!this.closingReason) this.closingReason = reason;
    const ws = this.ws;
    if (!ws) {
      this.onSocketClosed(reason);
      return;
    }
    if (ws.readyState === WebSocket.CONNECTING) {
      ws.terminate();
      return;
    }
    if (ws.readyState === WebSocket.OPEN) {
      ws.close(1000, 'tether worker going away');
      const t = setTimeout(() => ws.terminate(), 5000);
      t.unref?.();
    }
  }

  private settleOpen(err: Error | null): void {
    const opening = this.opening;
    if (!opening) return;
    this.opening = null;
    if (err) opening.reject(err);
    else opening.resolve();
  }

  private startPing(ws: WebSocket): void {
    const period = this.opts.pingIntervalMs;
    if (!(period > 0)) return;
    let alive = true;
    const mark = (): void => {
      alive = true;
    };
    ws.on('pong', mark);
    ws.on('message', mark);
    this.pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (!alive) {
        this.opts.log(`no answer from Buildbot for ${(2 * period) / 1000} s; dropping the connection`);
        this.closingReason = 'Buildbot stopped answering pings';
        ws.terminate();
        return;
      }
      alive = false;
      ws.ping();
    }, period);
    this.pingTimer.unref?.();
  }

  private onSocketClosed(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.accepted || !this.opened) this.opts.log(`disconnected: ${reason}`);
    this.opts.onClosed(reason);
  }
}

/** A TLS error about the peer's certificate (Node's codes: DEPTH_ZERO_SELF_SIGNED_CERT, ERR_TLS_CERT_ALTNAME_INVALID, ...). */
function untrustedCertificate(error: Error): boolean {
  return /CERT|SIGNATURE|ISSUER/.test((error as NodeJS.ErrnoException).code ?? '');
}
