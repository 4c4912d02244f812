/**
 * 'cpdir': buildbot_worker/commands/fs.py CopyDirectory (POSIX branch).
 *
 * Arguments: from_path and to_path (or Buildbot's fromdir and todir, relative
 * to io.basedir), timeout (default 120), maxTime, logEnviron (default True).
 *
 * Creates to_path's parent if missing (an error there fails the command),
 * then runs `cp -R -P -p -v <from> <to>` through RunProcess in io.basedir:
 * runprocess headers, cp's output, "elapsedTime="; then ('rc', cp's exit
 * code) — e.g. 1 with "cp: cannot stat '<from>': No such file or directory"
 * on stderr. Like rmdir, an interrupt does not stop cp.
 */
import { argOr, defineCommand, optNumber, truthy } from './base';
import { exists, makedirs, pathDirname } from './paths';
import { runHelper } from './rmdir';

interface CpdirSetup {
  fromPath: string;
  toPath: string;
  timeout: number | null;
  maxTime: number | null;
  logEnviron: boolean;
}

export const cpdir = defineCommand<CpdirSetup>({
  name: 'cpdir',
  className: 'CopyDirectory',
  requiredArgs: ['to_path', 'from_path'],
  setup: (args) => ({
    fromPath: args.from_path as string,
    toPath: args.to_path as string,
    timeout: optNumber(args, 'timeout', 120),
    maxTime: optNumber(args, 'maxTime'),
    logEnviron: truthy(argOr(args, 'logEnviron', true)),
  }),
  async start({ fromPath, toPath, ...opts }, io, ctx) {
    const parent = pathDirname(toPath);
    if (!exists(parent)) makedirs(parent);
    const rc = await runHelper(io, ['cp', '-R', '-P', '-p', '-v', fromPath, toPath], opts);
    ctx.sendStatus('rc', rc);
  },
});
