/**
 * The docs stay true to the code and to each other: every relative link in
 * README.md and docs/*.md reaches a file (and a heading, for #anchors), and
 * docs/cli.md's flag tables name exactly the options each command parses.
 */
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OPTIONS as AGENT_OPTIONS } from '../agent/cli';
import { OPTIONS as MASTER_OPTIONS } from '../master-plugin/cli';
import { EXEC_OPTIONS, FILE_OPTIONS } from '../master-plugin/exec';
import { HUB_OPTIONS } from '../master-plugin/hub-options';
import { REPO_ROOT } from './helpers/support';

const DOCS = path.join(REPO_ROOT, 'docs');
const pages = ['README.md', ...fs.readdirSync(DOCS).filter((f) => f.endsWith('.md')).map((f) => path.join('docs', f))];

/** Markdown without its fenced blocks and inline code, where brackets are not links. */
function prose(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
}

function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of markdown.replace(/^```[\s\S]*?^```$/gm, '').matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(m[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

t.test('every relative link reaches its file and heading', async (t) => {
  for (const page of pages) {
    const text = fs.readFileSync(path.join(REPO_ROOT, page), 'utf8');
    for (const [, target] of prose(text).matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue;
      const [file, anchor] = target.split('#', 2);
      const resolved = file ? path.resolve(path.dirname(path.join(REPO_ROOT, page)), file) : path.join(REPO_ROOT, page);
      if (!fs.existsSync(resolved)) {
        t.fail(`${page}: link to ${target}: ${path.relative(REPO_ROOT, resolved)} does not exist`);
        continue;
      }
      if (anchor === undefined) continue;
      t.ok(anchors(fs.readFileSync(resolved, 'utf8')).has(anchor), `${page}: link to ${target}: the heading #${anchor} exists`);
    }
  }
});

/** The `## ` section of docs/cli.md whose heading is `heading`. */
function section(markdown: string, heading: string): string {
  const found = markdown.split(/^## /m).find((s) => s.split('\n', 1)[0] === heading);
  if (found === undefined) throw new Error(`docs/cli.md has no "## ${heading}" section`);
  return found;
}

/** The flags in the first column of a section's tables. */
function tableFlags(text: string): Set<string> {
  const out = new Set<string>();
  for (const row of text.matchAll(/^\| *([^|\n]*)\|/gm)) for (const m of row[1].matchAll(/`-?-[a-z][a-z-]*/g)) out.add(m[0].slice(1));
  return out;
}

const flags = (options: object) => Object.keys(options).map((k) => `--${k}`);

t.test('docs/cli.md names every option of each command, and no other', async (t) => {
  const cli = fs.readFileSync(path.join(DOCS, 'cli.md'), 'utf8');
  const modes: Array<[string, object, object]> = [
    // heading, the options it parses, the options its table must list (the rest may be named in its text)
    ['tether-agent', AGENT_OPTIONS, AGENT_OPTIONS],
    ['tether-master', MASTER_OPTIONS, MASTER_OPTIONS],
    ['tether-master exec', EXEC_OPTIONS, Object.fromEntries(Object.entries(EXEC_OPTIONS).filter(([k]) => !(k in HUB_OPTIONS)))],
    ['tether-master put and get', FILE_OPTIONS, Object.fromEntries(Object.entries(FILE_OPTIONS).filter(([k]) => !(k in HUB_OPTIONS)))],
  ];
  for (const [heading, parsed, tabled] of modes) {
    const text = section(cli, heading);
    const known = new Set([...flags(parsed), '-h']);
    const listed = tableFlags(text);
    for (const flag of listed) t.ok(known.has(flag), `${heading}: the table's ${flag} is an option`);
    for (const flag of flags(tabled)) t.ok(listed.has(flag), `${heading}: ${flag} is in the table`);
    for (const flag of flags(parsed)) t.ok(text.includes(`\`${flag}`), `${heading}: ${flag} is described`);
  }
});
