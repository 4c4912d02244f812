/**
 * 'stat': buildbot_worker/commands/fs.py StatFile.
 *
 * Arguments: path (or Buildbot's workdir + file, relative to io.basedir).
 * Sends 'stat' with tuple(os.stat(path)) — [st_mode, st_ino, st_dev,
 * st_nlink, st_uid, st_gid, st_size, st_atime, st_mtime, st_ctime], the three
 * times as whole seconds (the tuple form truncates them) — then rc 0. The
 * master's steps read it with stat.S_ISREG(s[stat.ST_MODE]) and the like.
 * Follows symlinks, as os.stat does. Errors: header "stat: <strerror>: <path>",
 * rc = errno (2 for a missing file).
 */
import * as fs from 'fs';
import { defineCommand, sendOSError } from './base';
import { keyError } from './paths';

/** A bigint as a number when exact, else kept as bigint (CBOR carries both). */
function num(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
}

/** tuple(os.stat_result). */
export function statTuple(s: fs.BigIntStats): Array<number | bigint> {
  // the tuple's time fields are the whole seconds of the timespec (floor)
  const secs = (ns: bigint) => {
    const q = ns / 1_000_000_000n;
    return num(ns < 0n && q * 1_000_000_000n !== ns ? q - 1n : q);
  };
  return [
    num(s.mode),
    num(s.ino),
    num(s.dev),
    num(s.nlink),
    num(s.uid),
    num(s.gid),
    num(s.size),
    secs(s.atimeNs),
    secs(s.mtimeNs),
    secs(s.ctimeNs),
  ];
}

export const stat = defineCommand<{ args: Record<string, unknown> }>({
  name: 'stat',
  className: 'StatFile',
  requiredArgs: [], // fs.py spells it requireArgs, so nothing is checked up front
  setup: (args) => ({ args }),
  async start({ args }, _io, ctx) {
    if (!('path' in args)) throw keyError('path');
    const filename = args.path as string;
    let s: fs.BigIntStats;
    try {
      s = fs.statSync(filename, { bigint: true });
    } catch (err) {
      sendOSError(ctx, 'stat', err, filename);
      return;
    }
    ctx.sendStatus('stat', statTuple(s));
    ctx.sendStatus('rc', 0);
  },
});
