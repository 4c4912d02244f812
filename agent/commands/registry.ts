/**
 * The commands this agent runs, by the names the master uses: the table of
 * buildbot_worker/commands/registry.py, including its camelCase aliases (the
 * names older masters send, which buildbot-worker also reports).
 */
import type { Command } from './command';
import { cpdir } from './cpdir';
import { downloadFile } from './download-file';
import { glob } from './glob';
import { listdirCommand } from './listdir';
import { mkdir } from './mkdir';
import { rmdir } from './rmdir';
import { rmfile } from './rmfile';
import { shell } from './shell';
import { stat } from './stat';
import { uploadDirectory } from './upload-directory';
import { uploadFile } from './upload-file';

export const commands: Record<string, Command> = {
  shell,
  uploadFile,
  upload_file: uploadFile,
  uploadDirectory,
  upload_directory: uploadDirectory,
  downloadFile,
  download_file: downloadFile,
  mkdir,
  rmdir,
  cpdir,
  stat,
  glob,
  listdir: listdirCommand,
  rmfile,
};

/** registry.getAllCommandNames(). */
export function getAllCommandNames(): string[] {
  return Object.keys(commands);
}
