// npm run bench: measures the Disk storage against baselines measured in the
// same run, and writes the results into docs/performance.md.
//
//   1. Reading a 1 GiB file into memory: load with need_load_file: true against
//      Node's fs.promises.readFile. Time ratio (median of several alternating
//      rounds, warm page cache), peak extra memory (peak RSS − RSS before), and
//      RSS after the scope of the load closed.
//   2. Finding one file by mask in a folder of 100,000 files: load against
//      Python's os.listdir + re.search (what mlup does), both timed in-process.
//   3. Fetching a 1 GiB file over loopback into a local file: the HTTP storage
//      against curl, and the S3 storage against the AWS SDK's GetObject piped
//      into a file, each server in a process of its own; time and peak memory.
//
// Environment: BENCH_SIZE_MIB (default 1024), BENCH_FILES (default 100000),
// BENCH_ROUNDS (default 5), BENCH_DIR (default: a folder under the OS temp dir).
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { bundleReport, measureBundles } from "./bundle.js"
import { median, peersBenchmark, peersReport, type Run, timed } from "./peers.js"
import { putFile, s3Client, startS3rver } from "./s3rver.js"

// The AWS SDK's Node-version notice is noise in the children's output.
process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] ??= "true"

const MiB = 1024 * 1024
const sizeMiB = Number(process.env["BENCH_SIZE_MIB"] ?? 1024)
const fileCount = Number(process.env["BENCH_FILES"] ?? 100_000)
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 5)
const root = path.resolve(import.meta.dirname, "..")
const work = fs.mkdtempSync(path.join(process.env["BENCH_DIR"] ?? os.tmpdir(), "mlup-storage-bench-"))

// The command as published (the whole-process rows run dist/bin.js).
execFileSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" })
const bin = path.join(root, "dist", "bin.js")
const node = (script: string, args: ReadonlyArray<string>) =>
  JSON.parse(execFileSync(process.execPath, ["--import", "tsx", path.join(root, "bench", script), ...args], { encoding: "utf8" }))

const readBenchmark = () => {
  const file = path.join(work, "model.bin")
  console.log(`writing a ${sizeMiB} MiB file…`)
  const chunk = Buffer.alloc(MiB)
  const fd = fs.openSync(file, "w")
  for (let i = 0; i < sizeMiB; i++) {
    chunk.fill(i & 0xff)
    fs.writeSync(fd, chunk)
  }
  fs.closeSync(fd)
  execFileSync("cat", [file], { stdio: ["ignore", "ignore", "inherit"] }) // warm the page cache
  const results: Record<string, Array<{ ms: number; peakExtra: number; afterRelease: number | null }>> = { readFile: [], load: [] }
  for (let round = 0; round < rounds; round++) {
    for (const mode of round % 2 === 0 ? ["readFile", "load"] : ["load", "readFile"]) {
      const result = node("read-child.ts", [mode, file])
      results[mode]!.push(result)
      console.log(`  ${mode.padEnd(8)} ${result.ms.toFixed(0).padStart(6)} ms   peak extra ${(result.peakExtra / MiB).toFixed(0)} MiB` +
        (result.afterRelease === null ? "" : `   after release ${(result.afterRelease / MiB).toFixed(1)} MiB`))
    }
  }
  fs.rmSync(file)
  const summary = (mode: string) => ({
    ms: median(results[mode]!.map((r) => r.ms)),
    peakExtra: median(results[mode]!.map((r) => r.peakExtra)),
    afterRelease: median(results[mode]!.map((r) => r.afterRelease ?? 0))
  })
  return { baseline: summary("readFile"), load: summary("load"), size: sizeMiB * MiB }
}

const maskBenchmark = () => {
  const folder = path.join(work, "many")
  fs.mkdirSync(folder)
  console.log(`creating ${fileCount} files…`)
  for (let i = 0; i < fileCount - 1; i++) fs.closeSync(fs.openSync(path.join(folder, `shard-${String(i).padStart(6, "0")}.bin`), "w"))
  fs.writeFileSync(path.join(folder, "model.onnx"), "weights")
  const mask = String.raw`model\.onnx$`
  const python = JSON.parse(execFileSync("python3", ["-c", `
import json, os, re, sys, time
folder, mask, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for _ in range(rounds):
    start = time.perf_counter()
    found = [os.path.join(folder, name) for name in os.listdir(folder) if re.search(mask, name)]
    times.append((time.perf_counter() - start) * 1000)
times.sort()
print(json.dumps({"found": len(found), "medianMs": times[len(times) // 2]}))
`, folder, mask, String(rounds * 3)], { encoding: "utf8" }))
  const load = node("mask-child.ts", [folder, mask, String(rounds * 3)])
  for (const [name, r] of [["python", python], ["load", load]] as const) {
    console.log(`  ${name.padEnd(10)} ${r.medianMs.toFixed(1).padStart(7)} ms  (found ${r.found})`)
  }
  fs.rmSync(folder, { recursive: true })
  return { python, load }
}

/** Starts a server script in a process of its own; resolves with the JSON line it prints first. */
const startServer = (script: string, args: ReadonlyArray<string>, flags: ReadonlyArray<string> = []) =>
  new Promise<{ info: Record<string, string>; stop: () => void }>((resolve, reject) => {
    const child = spawn(process.execPath, [...flags, "--import", "tsx", path.join(root, "bench", script), ...args], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.on("data", (chunk) => {
      out += chunk
      if (out.includes("\n")) resolve({ info: JSON.parse(out.split("\n")[0]!), stop: () => child.kill() })
    })
    child.on("exit", (code) => reject(new Error(`${script} exited with ${code}`)))
  })

const writeFile = (file: string) => {
  const chunk = Buffer.alloc(MiB)
  const fd = fs.openSync(file, "w")
  for (let i = 0; i < sizeMiB; i++) {
    chunk.fill((i * 7) & 0xff)
    fs.writeSync(fd, chunk)
  }
  fs.closeSync(fd)
}

interface Fetch {
  readonly ms: number
  /** CPU seconds of the client over the transfer (user + system, every thread). */
  readonly cpu: number
  /** The client's peak RSS above its RSS before the transfer (in-process), else its peak RSS (whole process), bytes. */
  readonly peak: number
}

/** Median and min–max of the per-round ratios a[i] / b[i]. */
const perRound = (a: ReadonlyArray<Fetch>, b: ReadonlyArray<Fetch>) => {
  const ratios = a.map((x, i) => x.ms / b[i]!.ms)
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) }
}
const wholeProcess = (run: Run): Fetch => ({ ms: run.ms, cpu: run.cpu, peak: run.rss * MiB })

const remoteBenchmark = async () => {
  const file = path.join(work, "remote.bin")
  console.log(`writing a ${sizeMiB} MiB file to serve…`)
  writeFile(file)
  const size = sizeMiB * MiB
  const fetchDir = process.env["BENCH_FETCH_DIR"] ?? (fs.existsSync("/dev/shm") ? "/dev/shm" : work)
  const out = path.join(fs.mkdtempSync(path.join(fetchDir, "mlup-storage-bench-")), "out")
  const results: Record<string, Array<Fetch>> = {
    curl: [], node: [], http: [], sdk: [], s3: [], "sdk-many": [], "s3-many": [], "sdk-process": [], "s3-process": []
  }
  const measure = (mode: string, run: () => Fetch) => {
    fs.rmSync(out, { recursive: true, force: true })
    const result = run()
    results[mode]!.push(result)
    fs.rmSync(out, { recursive: true, force: true })
    console.log(`  ${mode.padEnd(11)} ${result.ms.toFixed(0).padStart(6)} ms  ${(size / MiB / (result.ms / 1000)).toFixed(0).padStart(5)} MiB/s` +
      `  CPU ${result.cpu.toFixed(2)} s  peak ${(result.peak / MiB).toFixed(1)} MiB`)
  }
  const child = (mode: string, source: string): Fetch => {
    const result = node("fetch-child.ts", [mode, source, out])
    if (result.bytes !== size) throw new Error(`${mode} fetched ${result.bytes} bytes, not ${size}`)
    return { ms: result.ms, cpu: result.cpu, peak: result.peakExtra }
  }

  console.log("HTTP: curl against the HTTP storage")
  const http = await startServer("http-server.ts", [file])
  try {
    const url = http.info["url"]!
    for (let round = 0; round < rounds; round++) {
      for (const mode of round % 2 === 0 ? ["curl", "node", "http"] : ["http", "node", "curl"]) {
        measure(mode, () => {
          if (mode !== "curl") return child(mode, url)
          const run = timed("curl", ["--silent", "--show-error", "--fail", "--output", out, url])
          if (fs.statSync(out).size !== size) throw new Error("curl fetched a short file")
          return wholeProcess(run)
        })
      }
    }
  } finally {
    http.stop()
  }

  console.log("S3: the AWS SDK's GetObject against the S3 storage (s3rver)")
  const s3dir = path.join(work, "s3rver")
  fs.mkdirSync(s3dir)
  const s3 = await startS3rver(s3dir)
  try {
    const endpoint = s3.endpoint
    const client = s3Client(endpoint)
    await putFile(client, "model.bin", file)
    const head = await client.send(new GetObjectCommand({ Bucket: "bench", Key: "model.bin", Range: "bytes=0-0" }))
    await head.Body?.transformToByteArray()
    for (let round = 0; round < rounds; round++) {
      for (const mode of round % 2 === 0 ? ["sdk", "s3"] : ["s3", "sdk"]) measure(mode, () => child(mode, endpoint))
    }
    // Whole processes: the command against a script of the SDK's (their start-up included).
    console.log("S3, whole processes: mlup-storage fetch s3://… against a GetObject script")
    const env = { ...process.env, XDG_CACHE_HOME: path.join(work, "xdg-s3"), AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" }
    const kwargs = JSON.stringify({ endpoint, cache_dir: out })
    timed(process.execPath, [bin, "--version"], env)
    for (let round = 0; round < rounds; round++) {
      for (const mode of round % 2 === 0 ? ["sdk-process", "s3-process"] : ["s3-process", "sdk-process"]) {
        measure(mode, () => {
          fs.mkdirSync(out, { recursive: true })
          return wholeProcess(
            mode === "sdk-process"
              ? timed(process.execPath, [path.join(root, "bench", "sdk-get.mjs"), endpoint, "model.bin", path.join(out, "model.bin")], env)
              : timed(process.execPath, [bin, "fetch", "s3://bench/model.bin", "-k", kwargs, "-q"], env)
          )
        })
      }
    }
    // Many small objects: the S3 storage against the SDK's list + 8 GetObjects at once.
    console.log(`S3: ${manyObjects} objects of 50 KiB`)
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < manyObjects) {
        const i = next++
        await client.send(new PutObjectCommand({
          Bucket: "bench",
          Key: `many/f${String(i).padStart(5, "0")}.bin`,
          Body: Buffer.alloc(50 * 1024, i & 0xff)
        }))
      }
    }))
    client.destroy()
    const manySize = manyObjects * 50 * 1024
    for (let round = 0; round < rounds; round++) {
      for (const mode of round % 2 === 0 ? ["sdk-many", "s3-many"] : ["s3-many", "sdk-many"]) {
        fs.rmSync(out, { recursive: true, force: true })
        const result = node("fetch-child.ts", [mode, endpoint, out])
        if (result.bytes !== manySize) throw new Error(`${mode} fetched ${result.bytes} bytes, not ${manySize}`)
        results[mode]!.push({ ms: result.ms, cpu: result.cpu, peak: result.peakExtra })
        console.log(`  ${mode.padEnd(11)} ${result.ms.toFixed(0).padStart(6)} ms  CPU ${result.cpu.toFixed(2)} s`)
      }
    }
  } finally {
    s3.stop()
  }
  fs.rmSync(file)
  fs.rmSync(path.dirname(out), { recursive: true, force: true })
  const summary = (mode: string) => ({
    ms: median(results[mode]!.map((r) => r.ms)),
    cpu: median(results[mode]!.map((r) => r.cpu)),
    peak: median(results[mode]!.map((r) => r.peak))
  })
  return {
    modes: Object.fromEntries(Object.keys(results).map((mode) => [mode, summary(mode)])),
    ratios: {
      http: perRound(results["http"]!, results["curl"]!),
      node: perRound(results["http"]!, results["node"]!),
      s3: perRound(results["s3"]!, results["sdk"]!),
      s3Process: perRound(results["s3-process"]!, results["sdk-process"]!),
      s3Many: perRound(results["s3-many"]!, results["sdk-many"]!)
    },
    size
  }
}

const read = readBenchmark()
const mask = maskBenchmark()
const manyFiles = Number(process.env["BENCH_MANY"] ?? 2000)
const manyObjects = manyFiles
const remote = await remoteBenchmark()
const capRate = process.env["BENCH_CAP"] ?? "20m"
const fastCapRate = process.env["BENCH_FAST_CAP"] ?? "100m"
const peers = await peersBenchmark({
  work,
  fetchDir: process.env["BENCH_FETCH_DIR"] ?? (fs.existsSync("/dev/shm") ? "/dev/shm" : work),
  sizeMiB,
  rounds,
  manyFiles,
  capRate,
  fastCapRate
})
fs.rmSync(work, { recursive: true, force: true })

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`
const ratio = (a: number, b: number) => (a / b).toFixed(3)
const fmt = (r: { median: number; min: number; max: number }) => `${r.median.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`
const gib = sizeMiB / 1024
/** A contender's median time, CPU per GiB and peak memory (extra, in-process; whole, for a process). */
const fetchCell = (mode: string, whole = false) => {
  const m = remote.modes[mode]!
  return `${m.ms.toFixed(0)} ms; CPU ${(m.cpu / gib).toFixed(2)} s/GiB; ${whole ? "peak" : "peak extra"} ${mib(m.peak)}`
}
const verdict = (ok: boolean) => (ok ? "met" : "**not met**")
const timeRatio = read.load.ms / read.baseline.ms
const memoryRatio = read.load.peakExtra / read.size
const maskRatio = mask.load.medianMs / mask.python.medianMs

// What bounds the goals not met: written by hand from profiles (bench/bounds.md), kept beside the tables.
const bounds = fs.readFileSync(path.join(root, "bench", "bounds.md"), "utf8")

const report = `# Performance

Measured by \`npm run bench\` (bench/run.ts) on ${new Date().toISOString().slice(0, 10)}: Node ${process.version},
${os.cpus().length} × ${os.cpus()[0]?.model ?? "CPU"}, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB of memory, ${os.platform()} ${os.release()}.
Every ratio compares two measurements taken in the same run. Nothing here is asserted by a test.

## Reading a ${sizeMiB} MiB file into memory

\`load\` with \`need_load_file: true\` against Node's \`fs.promises.readFile\`, each in a fresh process,
${rounds} alternating rounds each, warm page cache; medians. Peak extra memory is the process's peak RSS
(Linux's VmHWM, reset just before the read) minus its RSS before the read. "After the scope" is RSS after the scope of \`load\` closed (the
finalizer detached the buffer and ran the collector) minus RSS before the read.

| measure | fs.promises.readFile | load (need_load_file: true) | ratio | goal |
| --- | ---: | ---: | ---: | --- |
| time | ${read.baseline.ms.toFixed(0)} ms | ${read.load.ms.toFixed(0)} ms | ${ratio(read.load.ms, read.baseline.ms)} | ≤ 1.05: ${verdict(timeRatio <= 1.05)} |
| peak extra memory | ${mib(read.baseline.peakExtra)} | ${mib(read.load.peakExtra)} | ${memoryRatio.toFixed(3)} × file size | ≤ 1.05 × file size: ${verdict(memoryRatio <= 1.05)} |
| RSS after the scope closed, above the baseline | — | ${mib(read.load.afterRelease)} | | within 16 MiB: ${verdict(read.load.afterRelease <= 16 * MiB)} |

## Finding one file by mask in a folder of ${fileCount.toLocaleString("en")} files

Mask \`model\\.onnx$\`, one match. Python 3's \`os.listdir\` + \`re.search\` (mlup's way) against \`load\` with
\`need_load_file: false\` (list, match, sort, stat the match, close the scope), wired as a Node
application wires it (\`NodeStorage.layer\`), both timed in-process, median of ${rounds * 3} rounds.
(A load that hands out paths only releases no buffer, so its scope does not run the collector.)

| | median | ratio to Python | goal |
| --- | ---: | ---: | --- |
| Python os.listdir + re.search | ${mask.python.medianMs.toFixed(1)} ms | 1.000 | |
| load | ${mask.load.medianMs.toFixed(1)} ms | ${maskRatio.toFixed(3)} | ≤ 1.0: ${verdict(maskRatio <= 1)} |

## Fetching a ${sizeMiB} MiB file over loopback into a local file

Each server runs in a process of its own on 127.0.0.1, and every client writes to \`BENCH_FETCH_DIR\`
(default \`/dev/shm\` when it exists: memory, so that the disk's write-back does not decide the result).
The storages fetch into an empty cache with \`need_load_file: false\` (the file is streamed to the cache,
hashed, verified, flushed and renamed into place). In-process rows: each client in a fresh process, timed
from the first request to the file in place, its CPU time (user + system, every thread) over that span,
and its peak RSS above its RSS before (VmHWM, reset once everything was imported). Whole-process rows:
wall time, CPU time and peak RSS of the process (getrusage). ${rounds} interleaved rounds; a cell holds
medians; the ratio is the storage's time over the baseline's, per round (median, min–max; below 1: faster).

| transfer | baseline | storage | time ratio (per round) | goal |
| --- | --- | --- | ---: | --- |
| HTTP (node:http server), in-process, against \`curl -o\` | ${fetchCell("curl", true)} | ${fetchCell("http")} | ${fmt(remote.ratios.http)} × | ≤ 1.3×: ${verdict(remote.ratios.http.median <= 1.3)} |
| (reference: plain Node doing the same work, node:http → sha256 → file) | ${fetchCell("node")} | | ${fmt(remote.ratios.node)} × | |
| S3 (s3rver), in-process, against the SDK's GetObject piped to a file | ${fetchCell("sdk")} | ${fetchCell("s3")} | ${fmt(remote.ratios.s3)} × | ≤ 1.0×: ${verdict(remote.ratios.s3.median <= 1)} |
| S3, whole processes: \`mlup-storage fetch s3://…\` against a GetObject script (bench/sdk-get.mjs) | ${fetchCell("sdk-process", true)} | ${fetchCell("s3-process", true)} | ${fmt(remote.ratios.s3Process)} × | ≤ 1.0×: ${verdict(remote.ratios.s3Process.median <= 1)} |
| S3, ${manyObjects.toLocaleString("en")} objects of 50 KiB, in-process, against ListObjectsV2 + 8 GetObjects at once | ${remote.modes["sdk-many"]!.ms.toFixed(0)} ms; CPU ${remote.modes["sdk-many"]!.cpu.toFixed(2)} s | ${remote.modes["s3-many"]!.ms.toFixed(0)} ms; CPU ${remote.modes["s3-many"]!.cpu.toFixed(2)} s | ${fmt(remote.ratios.s3Many)} × | ≤ 1.0×: ${verdict(remote.ratios.s3Many.median <= 1)} |

${peersReport(peers, { sizeMiB, rounds, capRate, fastCapRate })}
${bounds}
${bundleReport(await measureBundles())}
## Reproduce

\`\`\`sh
npm run bench                                   # 1 GiB, 100,000 files, 2,000 small files, 5 rounds
BENCH_SIZE_MIB=256 BENCH_FILES=20000 BENCH_MANY=500 BENCH_ROUNDS=3 npm run bench   # smaller
BENCH_CAP=20m BENCH_FAST_CAP=100m              # the capped cases' per-connection rates (nginx limit_rate)
npm run bench:memory                            # straight into memory and the MemoryBudget (its own section)
npm run bench:hub                               # the Hub against huggingface_hub and @huggingface/hub (its own section)
npm run bench:archives                          # a packed model (tar.gz, zip) against curl | tar, unzip (its own section; also run by npm run bench)
npm run bench:registry                          # an OCI artifact against skopeo and curl (its own section; also run by npm run bench)
\`\`\`

It needs about ${3 * sizeMiB + 100} MiB free in the OS temp folder (or \`BENCH_DIR\`) and in \`BENCH_FETCH_DIR\`,
python3 and curl; nginx and aria2c when present (\`apt-get install nginx-light aria2\`). It writes this file.
`
// The sections of npm run bench:hub (which needs Python's huggingface_hub), bench:memory, bench:archives, bench:registry and bench:watch (run next) are kept as they were.
const doc = path.join(root, "docs", "performance.md")
const before = fs.existsSync(doc) ? fs.readFileSync(doc, "utf8") : ""
const kept = [
  /<!-- hub:start[\s\S]*?<!-- hub:end -->\n/,
  /<!-- memory:start[\s\S]*?<!-- memory:end -->\n/,
  /<!-- archives:start[\s\S]*?<!-- archives:end -->\n/,
  /<!-- registry:start[\s\S]*?<!-- registry:end -->\n/,
  /<!-- watch:start[\s\S]*?<!-- watch:end -->\n/
]
  .flatMap((section) => section.exec(before)?.[0] ?? [])
fs.writeFileSync(doc, report.replace(/\n## Reproduce\n/, `\n${kept.map((section) => `${section}\n`).join("")}## Reproduce\n`))
console.log(`\nwrote docs/performance.md`)
