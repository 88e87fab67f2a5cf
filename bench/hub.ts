// npm run bench:hub: the Hugging Face Hub storage against huggingface_hub's
// snapshot_download (Python) and @huggingface/hub's snapshotDownload (Node),
// all as whole processes, from the same Hub on loopback
// (the tests' server, bench/hub-server.ts: one repository of a large LFS
// file, five 2 MiB LFS files and thirty small files). Interleaved rounds;
// per-round ratios (median, min–max); peak RSS from /usr/bin/time. Cold: an
// empty cache each round; warm: the same cache again (nothing changed).
// Writes its section of docs/performance.md (between the hub markers).
//
// Needs python3 with huggingface_hub (pip install huggingface_hub), GNU time
// (/usr/bin/time), and the npm registry (@huggingface/hub is installed into
// the benchmark's temporary folder, not into the project). Environment:
// BENCH_HUB_MIB (512), BENCH_ROUNDS (5).
import { execFileSync, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"

const root = path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 5)
const sizeMiB = Number(process.env["BENCH_HUB_MIB"] ?? 512)
const work = fs.mkdtempSync(path.join(process.env["BENCH_DIR"] ?? os.tmpdir(), "mlup-storage-bench-hub-"))
const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

const python = spawnSync("python3", ["-c", "import huggingface_hub; print(huggingface_hub.__version__)"], { encoding: "utf8" })
if (python.status !== 0) {
  console.error("bench:hub needs python3 with huggingface_hub: pip install huggingface_hub")
  process.exit(1)
}
const hfVersion = python.stdout.trim()
// @huggingface/hub, as a Node user installs it, into the benchmark's own folder.
const hfjs = path.join(work, "hfjs")
fs.mkdirSync(hfjs)
execFileSync("npm", ["install", "--no-save", "--no-audit", "--no-fund", "--silent", "--prefix", hfjs, "@huggingface/hub@2"], {
  stdio: "inherit"
})
const hfjsVersion = JSON.parse(fs.readFileSync(path.join(hfjs, "node_modules", "@huggingface", "hub", "package.json"), "utf8")).version as string

execFileSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" })
const server = spawn(process.execPath, ["--import", "tsx", path.join(root, "bench", "hub-server.ts")], {
  cwd: root,
  stdio: ["pipe", "pipe", "inherit"],
  env: { ...process.env, BENCH_HUB_MIB: String(sizeMiB) }
})
const info = JSON.parse(await new Promise<string>((resolve) => readline.createInterface({ input: server.stdout! }).once("line", resolve))) as {
  readonly endpoint: string
  readonly files: number
  readonly bytes: number
}

const env = {
  ...process.env,
  HF_ENDPOINT: info.endpoint,
  HF_HUB_DISABLE_TELEMETRY: "1",
  HF_HUB_DISABLE_XET: "1",
  HF_HUB_DISABLE_PROGRESS_BARS: "1",
  HF_TOKEN_PATH: "/nonexistent",
  XDG_CACHE_HOME: path.join(work, "xdg")
}
delete (env as Record<string, string | undefined>)["HF_TOKEN"]

/** Runs a command under GNU time: wall ms and peak RSS (MiB). Throws when it fails. */
const measured = (command: string, args: ReadonlyArray<string>, cwd?: string) => {
  const start = performance.now()
  const result = spawnSync("/usr/bin/time", ["-f", "%M", command, ...args], {
    env,
    cwd,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024
  })
  const ms = performance.now() - start
  if (result.status !== 0) throw new Error(`${command} failed: ${result.stderr}`)
  const kib = Number(result.stderr.trim().split("\n").at(-1))
  return { ms, rssMiB: kib / 1024 }
}

const ours = (cache: string) =>
  measured(process.execPath, [path.join(root, "dist", "bin.js"), "fetch", "-q", "hf://bench/model", "-k", JSON.stringify({ cache_dir: cache })])
const theirs = (cache: string) =>
  measured("python3", ["-c", `from huggingface_hub import snapshot_download; snapshot_download("bench/model", cache_dir=${JSON.stringify(cache)})`])
const js = (cache: string) =>
  measured(process.execPath, [
    "--input-type=module",
    "-e",
    `import { snapshotDownload } from "@huggingface/hub"; await snapshotDownload({ repo: "bench/model", cacheDir: ${
      JSON.stringify(cache)
    }, hubUrl: ${JSON.stringify(info.endpoint)} })`
  ], hfjs)

// The command's code cache is written once beforehand, as after a user's first run.
ours(path.join(work, "first"))
fs.rmSync(path.join(work, "first"), { recursive: true, force: true })
// @huggingface/hub asks for APIs the tests' Hub may not serve: tried once, left out (and said so) if it fails.
let jsFailure: string | undefined
try {
  js(path.join(work, "first-js"))
} catch (error) {
  jsFailure = String((error as Error).message).split("\n").filter((line) => line.trim() !== "").slice(-3).join(" ").slice(0, 300)
  console.log(`@huggingface/hub left out: ${jsFailure}`)
}
fs.rmSync(path.join(work, "first-js"), { recursive: true, force: true })

type Sample = { ms: number; rssMiB: number }
const results: Record<string, Array<Sample>> = { oursCold: [], theirsCold: [], oursWarm: [], theirsWarm: [], jsCold: [], jsWarm: [] }
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? ["ours", "theirs", "js"] as const : ["js", "theirs", "ours"] as const
  for (const who of order) {
    if (who === "js" && jsFailure !== undefined) continue
    const cache = path.join(work, `${who}-${round}`)
    const run = who === "ours" ? ours : who === "theirs" ? theirs : js
    const cold = run(cache)
    const warm = run(cache)
    results[`${who}Cold`]!.push(cold)
    results[`${who}Warm`]!.push(warm)
    console.log(`  round ${round + 1} ${who.padEnd(6)} cold ${cold.ms.toFixed(0).padStart(6)} ms (${cold.rssMiB.toFixed(0)} MiB)   warm ${warm.ms.toFixed(0).padStart(5)} ms`)
    fs.rmSync(cache, { recursive: true, force: true })
  }
}
server.stdin!.end()
fs.rmSync(work, { recursive: true, force: true })

// A contender left out has no samples: its cells say so.
const ratio = (a: ReadonlyArray<Sample>, b: ReadonlyArray<Sample>) => {
  if (a.length === 0 || b.length === 0) return "—"
  const ratios = a.map((sample, i) => sample.ms / b[i]!.ms)
  return `${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`
}
const ms = (samples: ReadonlyArray<Sample>) =>
  samples.length === 0 ? "not measured" : `${median(samples.map((s) => s.ms)).toFixed(0)} ms`
const rss = (samples: ReadonlyArray<Sample>) =>
  samples.length === 0 ? "—" : `${median(samples.map((s) => s.rssMiB)).toFixed(0)} MiB`

const section = `<!-- hub:start (written by npm run bench:hub) -->
## The Hugging Face Hub, against huggingface_hub and @huggingface/hub

\`npm run bench:hub\` (${new Date().toISOString().slice(0, 10)}, ${rounds} interleaved rounds): \`mlup-storage fetch -q hf://bench/model\`
(the bundled command) against huggingface_hub ${hfVersion}'s \`snapshot_download\` (\`python3 -c …\`) and
@huggingface/hub ${hfjsVersion}'s \`snapshotDownload\` (\`node -e …\`), whole
processes, from the same Hub on loopback (the tests' server: revision, tree and paths-info APIs, LFS files redirected
to a CDN on another address). The repository: ${info.files} files, ${(info.bytes / 1024 / 1024).toFixed(0)} MiB (one ${sizeMiB} MiB LFS file,
five 2 MiB LFS files, thirty small regular files). Cold: an empty cache; warm: the same cache again,
nothing changed on the Hub. Time ratio: ours / theirs per round (below 1: faster), median (min–max).
Peak RSS: GNU time's maximum resident set size of the process.

| case | huggingface_hub (Python) | @huggingface/hub (Node) | mlup-storage | time ratio to Python's / to Node's | peak RSS (Python, Node → ours) |
| --- | ---: | ---: | ---: | ---: | ---: |
| cold | ${ms(results["theirsCold"]!)} | ${ms(results["jsCold"]!)} | ${ms(results["oursCold"]!)} | ${ratio(results["oursCold"]!, results["theirsCold"]!)} / ${ratio(results["oursCold"]!, results["jsCold"]!)} | ${rss(results["theirsCold"]!)}, ${rss(results["jsCold"]!)} → ${rss(results["oursCold"]!)} |
| warm | ${ms(results["theirsWarm"]!)} | ${ms(results["jsWarm"]!)} | ${ms(results["oursWarm"]!)} | ${ratio(results["oursWarm"]!, results["theirsWarm"]!)} / ${ratio(results["oursWarm"]!, results["jsWarm"]!)} | ${rss(results["theirsWarm"]!)}, ${rss(results["jsWarm"]!)} → ${rss(results["oursWarm"]!)} |

${jsFailure === undefined ? "" : `@huggingface/hub could not be measured against the tests' Hub: ${jsFailure}\n\n`}What each does on a warm load: huggingface_hub asks for the revision (one request) and, for each file,
checks its cache; @huggingface/hub asks for the model's info and its file tree (two requests), then
checks each file's pointer in its cache; mlup-storage asks for the revision (one request), finds the commit's snapshot current
and checks each file's identity on disk (sizes, inodes, times; no hashing). Cold, both clients of
Hugging Face download each file in one stream (@huggingface/hub asks for each file's paths-info first); mlup-storage fetches the large file in parallel ranged parts
(8 × 16 MiB) and checks every file against the Hub's sha256 or git blob id (huggingface_hub checks sizes
and ETags, not the bytes).
<!-- hub:end -->
`
const doc = path.join(root, "docs", "performance.md")
const text = fs.readFileSync(doc, "utf8")
const marked = /<!-- hub:start[\s\S]*?<!-- hub:end -->\n/
fs.writeFileSync(doc, marked.test(text) ? text.replace(marked, section) : text.replace(/\n## Reproduce\n/, `\n${section}\n## Reproduce\n`))
console.log(`\nwrote the Hub's section of docs/performance.md`)
