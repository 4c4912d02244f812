/**
 * Keeps V8's young generation at its first size (2 MiB) in the agent's own
 * process. While output streams, nearly all the agent allocates dies young
 * (chunks, messages, frames), and V8 would grow the young generation to
 * 2 × 16 MiB (2 × 32 MiB on Node 24): about 15 MB more RSS on a board, for no
 * throughput the bench could tell apart (its memory and protocol sections).
 *
 * V8 reads the growth factor at each scavenge, so it can be set at run time
 * (--max-semi-space-size could not: the heap is sized by then). Loading this
 * module sets it: the entry points load it right after environment.ts, before
 * the rest of the agent's modules grow the heap. A program that embeds the
 * Agent class does not load it and keeps its own heap policy.
 */
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--semi-space-growth-factor=1');
