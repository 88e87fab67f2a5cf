// npm run bench:memory: loading straight into memory (cache: false,
// need_load_file: true) and the MemoryBudget, against baselines measured in the
// same run; rewrites its section of docs/performance.md (between the
// memory:start and memory:end markers; npm run bench keeps it).
//
//   capped   1 GiB from nginx capping each connection (limit_rate, default 20m)
//            into memory, in-process, against aria2c -x8 -s8 writing to
//            /dev/shm (a whole process); peak extra memory, and memory after
//            the load's scope closed
//   s3       1 GiB from s3rver into memory against the AWS SDK's GetObject into
//            a buffer (transformToByteArray), both in-process
//   budget   four loads of 512 MiB at once (HTTP, uncapped) under a 1 GiB
//            MemoryBudget, each holding its bytes 200 ms: peak extra memory,
//            beside the same four without a budget
//
// Environment: BENCH_SIZE_MIB (1024), BENCH_ROUNDS (3), BENCH_CAP (20m), BENCH_DIR.
// Needs nginx and aria2c (apt-get install nginx-light aria2) for the capped case.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { has, ratioOf, rounds, type Run, type Series, startServer, timed } from "./peers.js"
import { putFile, s3Client, startS3rver } from "./s3rver.js"

process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] ??= "true"

const MiB = 1024 * 1024
const root = path.resolve(import.meta.dirname, "..")

interface Child {
  readonly ms: number
  readonly bytes: number
  readonly peakExtra: number
  readonly afterRelease: number
}

const child = (mode: string, source: string, extra: ReadonlyArray<string> = []): Child =>
  JSON.parse(
    execFileSync(process.execPath, ["--import", "tsx", path.join(root, "bench", "memory-child.ts"), mode, source, ...extra], {
      encoding: "utf8"
    })
  )

const writeFile = (file: string, sizeMiB: number, seed: number) => {
  const chunk = Buffer.alloc(MiB)
  const fd = fs.openSync(file, "w")
  for (let i = 0; i < sizeMiB; i++) fs.writeSync(fd, chunk.fill((i * seed) & 0xff))
  fs.closeSync(fd)
}

const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

export const intoMemoryBenchmark = async (options: {
  readonly work: string
  readonly sizeMiB: number
  readonly rounds: number
  readonly capRate: string
}) => {
  const { work, sizeMiB } = options
  const size = sizeMiB * MiB
  const folder = path.join(work, "www-memory")
  fs.mkdirSync(folder, { recursive: true })
  for (const dir of [work, folder]) fs.chmodSync(dir, 0o755)
  writeFile(path.join(folder, "big.bin"), sizeMiB, 13)
  writeFile(path.join(folder, "half.bin"), sizeMiB / 2, 17)
  execFileSync("cat", [path.join(folder, "big.bin"), path.join(folder, "half.bin")], { stdio: ["ignore", "ignore", "inherit"] })
  const shm = fs.existsSync("/dev/shm") ? "/dev/shm" : work
  const out = fs.mkdtempSync(path.join(shm, "mlup-storage-bench-"))
  const memory: Record<string, Array<Child>> = {}
  // In-process loads: their time (their memory is kept apart; CPU and peak RSS are not compared here).
  const measured = (name: string, run: () => Child) => (): Run => {
    const result = run()
    if (result.bytes === 0) throw new Error(`${name} delivered nothing`)
    ;(memory[name] ??= []).push(result)
    return { ms: result.ms, cpu: Number.NaN, rss: Number.NaN }
  }
  const clean = () => fs.rmSync(path.join(out, "big.bin"), { force: true })

  let capped: Record<string, Series> | undefined
  let budget: Record<string, Series> | undefined
  const server = await startServer(folder, work, options.capRate)
  try {
    if (server.capped !== undefined && has("aria2c")) {
      console.log(`${sizeMiB} MiB into memory from a server that caps each connection (nginx limit_rate ${options.capRate})`)
      const url = `${server.capped}/big.bin`
      capped = rounds(options.rounds, {
        "aria2c -x8 -s8 to /dev/shm": () =>
          timed("aria2c", ["-x8", "-s8", "-k1M", "-q", "--allow-overwrite=true", "-d", out, "-o", "big.bin", url]),
        "load into memory (in-process)": measured("capped", () => child("http-memory", url))
      }, clean)
    }
    console.log(`four loads of ${sizeMiB / 2} MiB at once, under a ${sizeMiB} MiB budget and without one`)
    const half = `${server.base}/half.bin`
    budget = rounds(options.rounds, {
      "4 loads, budget": measured("budget", () => child("budget", half, [String(sizeMiB)])),
      "4 loads, no budget": measured("no-budget", () => child("no-budget", half))
    })
  } finally {
    server.stop()
    fs.rmSync(out, { recursive: true, force: true })
  }

  console.log(`${sizeMiB} MiB from s3rver into memory against the AWS SDK's GetObject into a buffer`)
  const s3dir = path.join(work, "s3rver-memory")
  fs.mkdirSync(s3dir)
  const s3 = await startS3rver(s3dir)
  let s3Series: Record<string, Series>
  try {
    const endpoint = s3.endpoint
    const client = s3Client(endpoint)
    await putFile(client, "model.bin", path.join(folder, "big.bin"))
    client.destroy()
    s3Series = rounds(options.rounds, {
      "SDK GetObject into a buffer": measured("sdk", () => child("sdk-buffer", endpoint)),
      "load into memory": measured("s3", () => child("s3-memory", endpoint))
    })
  } finally {
    s3.stop()
    fs.rmSync(folder, { recursive: true, force: true })
    fs.rmSync(s3dir, { recursive: true, force: true })
  }
  const summary = (name: string) => {
    const results = memory[name] ?? []
    return results.length === 0 ? undefined : {
      peakExtra: median(results.map((r) => r.peakExtra)),
      peakMax: Math.max(...results.map((r) => r.peakExtra)),
      afterRelease: median(results.map((r) => r.afterRelease))
    }
  }
  return {
    size,
    sizeMiB,
    capRate: options.capRate,
    rounds: options.rounds,
    capped,
    budget,
    s3: s3Series,
    memory: {
      capped: summary("capped"),
      s3: summary("s3"),
      sdk: summary("sdk"),
      budget: summary("budget"),
      noBudget: summary("no-budget")
    }
  }
}

export const intoMemoryReport = (result: Awaited<ReturnType<typeof intoMemoryBenchmark>>): string => {
  const mib = (bytes: number) => `${(bytes / MiB).toFixed(0)} MiB`
  const ms = (series: Series) => `${(median(series.ms) / 1000).toFixed(2)} s`
  const fmt = (r: { median: number; min: number; max: number }) => `${r.median.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`
  const verdict = (ok: boolean) => (ok ? "met" : "**not met**")
  const { capped, budget, s3, memory, size } = result
  const cappedRatio = capped === undefined
    ? undefined
    : ratioOf(capped["aria2c -x8 -s8 to /dev/shm"]!, capped["load into memory (in-process)"]!)
  const s3Ratio = ratioOf(s3["SDK GetObject into a buffer"]!, s3["load into memory"]!)
  const rows = [
    cappedRatio === undefined || memory.capped === undefined
      ? `| ${result.sizeMiB} MiB, each connection capped, into memory, against \`aria2c -x8\` | not measured (needs nginx and aria2c) | | | | |`
      : `| ${result.sizeMiB} MiB, each connection capped (nginx \`limit_rate ${result.capRate}\`), into memory, against \`aria2c -x8 -s8 -k1M\` to /dev/shm | ${
        ms(capped!["aria2c -x8 -s8 to /dev/shm"]!)
      } | ${ms(capped!["load into memory (in-process)"]!)} | ${fmt(cappedRatio)} × the speed; ≥ 1.0: ${verdict(cappedRatio.median >= 1)} | ${
        (memory.capped.peakExtra / size).toFixed(3)
      } × the file (max ${(memory.capped.peakMax / size).toFixed(3)}); ≤ 1.05: ${verdict(memory.capped.peakMax <= 1.05 * size)} | ${mib(memory.capped.afterRelease)} |`,
    `| ${result.sizeMiB} MiB from s3rver into memory, against the AWS SDK's \`GetObject\` into a buffer | ${ms(s3["SDK GetObject into a buffer"]!)} | ${
      ms(s3["load into memory"]!)
    } | ${fmt(s3Ratio)} × the speed; ≥ 1.0: ${verdict(s3Ratio.median >= 1)} | ${(memory.s3!.peakExtra / size).toFixed(3)} × the file (SDK: ${
      (memory.sdk!.peakExtra / size).toFixed(3)
    }) | ${mib(memory.s3!.afterRelease)} |`,
    `| four loads of ${result.sizeMiB / 2} MiB at once under a ${result.sizeMiB} MiB \`MemoryBudget\` (without one: ${
      mib(memory.noBudget!.peakExtra)
    } peak, ${ms(budget!["4 loads, no budget"]!)}) | | ${ms(budget!["4 loads, budget"]!)} | | ${mib(memory.budget!.peakExtra)} (max ${
      mib(memory.budget!.peakMax)
    }); < 1.1 × the budget: ${verdict(memory.budget!.peakMax < 1.1 * size)} | ${mib(memory.budget!.afterRelease)} |`
  ]
  return `<!-- memory:start (written by npm run bench:memory, bench/into-memory.ts; kept by npm run bench) -->
## Straight into memory (\`cache: false\`) and the memory budget

Measured by \`npm run bench:memory\` on ${new Date().toISOString().slice(0, 10)}, ${result.rounds} interleaved rounds; medians, and the
per-round ratios' min–max. The storage's loads run in a fresh process each and are timed in-process
(from \`load\` to the bytes in hand, verified); aria2c is a whole process. Peak extra memory is the
process's peak RSS (VmHWM, reset before the load) minus its RSS before; "after" is RSS once the load's
scope closed (buffers detached, collector run) minus RSS before.

| case | baseline | storage | ratio (baseline time / storage time) | peak extra memory | after the scope |
| --- | --- | --- | --- | --- | --- |
${rows.join("\n")}

- **Capped connections.** Eight ranged GETs (\`part_concurrency\` 8, 16 MiB parts) land in their regions of
  one buffer; the MD5 or sha256 a source vouches for is computed in a worker from 4 MiB copies as parts
  finish in order, so the event loop only receives and copies. The one buffer is the file's size; the
  rest of the peak is Node's receive buffers and the hasher's copies (at most four of 4 MiB).
- **s3rver.** The SDK's \`transformToByteArray\` gathers the chunks and copies them into one array (about
  twice the file at its peak); the storage reads 16 MiB ranges in parallel into one buffer.
- **Budget.** Each load reserves its file's size before it allocates; the third and fourth wait
  (progress says \`waiting\`) until the first two close their scopes.
<!-- memory:end -->
`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const work = fs.mkdtempSync(path.join(process.env["BENCH_DIR"] ?? os.tmpdir(), "mlup-storage-bench-"))
  try {
    const result = await intoMemoryBenchmark({
      work,
      sizeMiB: Number(process.env["BENCH_SIZE_MIB"] ?? 1024),
      rounds: Number(process.env["BENCH_ROUNDS"] ?? 3),
      capRate: process.env["BENCH_CAP"] ?? "20m"
    })
    const section = intoMemoryReport(result)
    const doc = path.join(root, "docs", "performance.md")
    const text = fs.readFileSync(doc, "utf8")
    const kept = /<!-- memory:start[\s\S]*?<!-- memory:end -->\n/
    fs.writeFileSync(doc, kept.test(text) ? text.replace(kept, section) : text.replace(/\n## Reproduce\n/, `\n${section}\n## Reproduce\n`))
    console.log(section)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}
