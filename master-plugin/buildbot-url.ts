/**
 * Where tether-master may log in to Buildbot. The login is an HTTP Basic
 * header on the WebSocket upgrade: the worker's name and its Buildbot
 * password, which is its Tether secret (what lets a master run commands on
 * the board), in base64, which hides nothing.
 *
 * Contract:
 * - buildbotUrl(text) parses --buildbot: ws://HOST:PORT or wss://HOST:PORT,
 *   a path kept. ws:// sends the header in clear, so it is taken only for a
 *   loopback host (127.0.0.0/8, ::1, "localhost"): TetherService's
 *   ws://127.0.0.1:PORT. Any other host over ws:// is a UsageError that says
 *   why and what to do. No option sends the secret in clear to another host:
 *   Buildbot's msgpack port has no TLS of its own (it takes a port number, not
 *   a Twisted endpoint), so a remote master is reached through TLS in front of
 *   that port (wss://: stunnel, nginx, as buildbot-worker's TLS reaches it) or
 *   a tunnel whose near end is loopback (ssh -L). A user or password in the
 *   URL is refused too: the login is the worker's, and the URL reaches ps and logs.
 * - loopbackLookup resolves a ws:// host name ("localhost") to its loopback
 *   addresses only, so that no hosts file or DNS answer sends the header
 *   elsewhere; with none, the connection fails.
 */
import * as dns from 'node:dns';
import { BlockList, type LookupFunction, isIP } from 'node:net';
import { UsageError } from '../wire/transport';

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** True for an address in 127.0.0.0/8 or ::1 (an IPv4-mapped ::ffff:127.x too: the same socket). */
function isLoopbackAddress(address: string): boolean {
  const family = isIP(address);
  return family !== 0 && LOOPBACK.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

/** A URL's hostname ([::1] in brackets, IPv4 already canonical: 127.1 is 127.0.0.1) names loopback. */
function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || isLoopbackAddress(hostname.replace(/^\[(.*)\]$/, '$1'));
}

/** The Buildbot master's msgpack port from --buildbot, if Tether may log in there (see the contract). */
export function buildbotUrl(text: string): URL {
  let url: URL | null;
  try {
    url = new URL(text);
  } catch {
    url = null;
  }
  if (url && (url.username || url.password)) {
    // not quoted: it holds a password
    throw new UsageError("--buildbot takes no user or password: Buildbot's login is the worker's name and secret");
  }
  if (!url || (url.protocol !== 'ws:' && url.protocol !== 'wss:') || !url.hostname) {
    throw new UsageError(`--buildbot takes ws://HOST:PORT or wss://HOST:PORT, not '${text}'`);
  }
  if (url.protocol === 'ws:' && !isLoopbackHost(url.hostname)) {
    throw new UsageError(
      `--buildbot ws://${url.host} is refused: over ws:// each worker's secret, its Buildbot password in an HTTP ` +
        "Basic header, would cross the network in clear. Use wss://HOST:PORT (TLS in front of Buildbot's msgpack " +
        'port, e.g. stunnel), or run tether-master on the Buildbot host with ws://127.0.0.1:PORT',
    );
  }
  return url;
}

/** dns.lookup keeping loopback answers only (net.connect asks for one address, or all of them). */
export const loopbackLookup: LookupFunction = (hostname, options, callback) => {
  dns.lookup(hostname, { ...options, all: true }, (error, found) => {
    const addresses = error ? [] : found.filter((a) => isLoopbackAddress(a.address));
    if (addresses.length > 0) {
      if (options.all) callback(null, addresses);
      else callback(null, addresses[0].address, addresses[0].family);
      return;
    }
    const why = error ?? new Error(`${hostname} resolves to no loopback address (${found.map((a) => a.address).join(', ')}): ws:// is for this host only`);
    callback(why, options.all ? [] : '');
  });
};
