/**
 * Benchmark dispatcher: `npm run bench -- NAME` runs bench/NAME.ts. Each benchmark module
 * exports `run()`, prints its own table, and returns figures and ratios; this prints the last line,
 * one JSON object `{"bench": NAME, "figures": {...}, "ratios": {...}}`.
 */
// Cell clients and raw baselines in this process run as in a daemon (see node/common/v8-tuning.ts).
import '../node/common/v8-tuning.ts';
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BenchResult {
  figures: Record<string, number>;
  ratios: Record<string, number>;
}

const directory = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(directory)
  .filter((name) => name.endsWith('.ts') && name !== 'run.ts' && !name.startsWith('_'))
  .map((name) => name.slice(0, -3))
  .sort();

const name = process.argv[2];
if (name === undefined || name === '--help' || !available.includes(name)) {
  console.error(`usage: npm run bench -- NAME\n  benchmarks: ${available.join(', ')}`);
  process.exit(name === undefined || name === '--help' ? 0 : 2);
}
const module = (await import(`./${name}.ts`)) as { run: (args: string[]) => Promise<BenchResult> };
const result = await module.run(process.argv.slice(3));
console.log(JSON.stringify({ bench: name, figures: result.figures, ratios: result.ratios }));
