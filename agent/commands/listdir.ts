/**
 * 'listdir': buildbot_worker/commands/fs.py ListDir.
 *
 * Arguments: path (or Buildbot's dir, relative to io.basedir). Sends 'files'
 * with os.listdir(path) — the names, in the order the directory yields them
 * (not sorted, like Python; '.' and '..' left out) — then rc 0. Errors:
 * header "listdir: <strerror>: <path>", rc = errno (2 missing, 20 not a directory).
 */
import * as fs from 'fs';
import { defineCommand, sendOSError } from './base';
import { keyError } from './paths';

/** os.listdir: directory order (fs.readdirSync would sort the names). */
export function listdir(dirname: string): string[] {
  const dir = fs.opendirSync(dirname);
  const names: string[] = [];
  try {
    for (let entry = dir.readSync(); entry; entry = dir.readSync()) names.push(entry.name);
  } finally {
    dir.closeSync();
  }
  return names;
}

export const listdirCommand = defineCommand<{ args: Record<string, unknown> }>({
  name: 'listdir',
  className: 'ListDir',
  requiredArgs: [], // requireArgs (sic) in fs.py
  setup: (args) => ({ args }),
  async start({ args }, _io, ctx) {
    if (!('path' in args)) throw keyError('path');
    const dirname = args.path as string;
    let files: string[];
    try {
      files = listdir(dirname);
    } catch (err) {
      sendOSError(ctx, 'listdir', err, dirname);
      return;
    }
    ctx.sendStatus('files', files);
    ctx.sendStatus('rc', 0);
  },
});
