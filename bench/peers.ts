// The command line and the library against the tools a user would otherwise
// run, each a whole process where the peer is one (curl's time includes its
// start, so the command's does too):
//
//   start-up      `mlup-storage --help` and `import "mlup-storage"` against `node -e 0`
//   many files    2,000 × 50 KiB over HTTP: curl -Z --parallel-max 8, cold; the
//                 command cold (an empty cache) and warm (every answer a 304)
//   large file    1 GiB over HTTP: curl -o against the command (parallel parts,
//                 the default, and one stream), and the API in-process beside it
//   capped        1 GiB from a server that caps each connection (nginx limit_rate)
//                 against aria2c -x8
//
// The HTTP server is nginx when it is installed (Debian's nginx-light), else
// the tests' Node server (then the capped case is skipped, as it is without
// aria2c). Rounds are interleaved; each ratio is the median of the per-round
// ratios, with their min–max.
import { execFileSync, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"

const MiB = 1024 * 1024
const root = path.resolve(import.meta.dirname, "..")
const bin = path.join(root, "dist", "bin.js")

/** One run of a whole process: its wall time, its CPU time (user + system) and its peak RSS. */
export interface Run {
  readonly ms: number
  /** User + system CPU seconds of the process (its threads included). */
  readonly cpu: number
  /** Peak resident set size, MiB (getrusage's ru_maxrss). */
  readonly rss: number
}

export interface Series {
  readonly name: string
  readonly ms: ReadonlyArray<number>
  readonly cpu: ReadonlyArray<number>
  readonly rss: ReadonlyArray<number>
}

export const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

/** Median and min–max of the per-round ratios a[i] / b[i]. */
export const ratioOf = (a: Series, b: Series) => {
  const ratios = a.ms.map((ms, i) => ms / b.ms[i]!)
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) }
}

export const has = (command: string) => spawnSync("sh", ["-c", `command -v ${command}`]).status === 0

// Runs a command as a child of its own and reports its wall time (from just
// before the spawn to its exit, as seen by the parent), CPU time and peak RSS
// from getrusage(RUSAGE_CHILDREN): the figures GNU time prints.
const measure = `
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
ms = (time.perf_counter() - start) * 1000
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"status": done.returncode, "ms": ms, "cpu": usage.ru_utime + usage.ru_stime,
  "rssKiB": usage.ru_maxrss, "stderr": done.stderr.decode(errors="replace")[-2000:]}))
`

/** Runs a command to its end: its wall time (ms), CPU time and peak RSS. Throws when it fails. */
export const timed = (command: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = process.env): Run => {
  const result = spawnSync("python3", ["-c", measure, command, ...args], { env, encoding: "utf8", maxBuffer: 64 * MiB })
  if (result.status !== 0) throw new Error(`measuring ${command} failed: ${result.stderr}`)
  const run = JSON.parse(result.stdout) as { status: number; ms: number; cpu: number; rssKiB: number; stderr: string }
  if (run.status !== 0) throw new Error(`${command} ${args.join(" ").slice(0, 200)} failed: ${run.stderr}`)
  return { ms: run.ms, cpu: run.cpu, rss: run.rssKiB / 1024 }
}

const show = (name: string, run: Run) =>
  console.log(`  ${name.padEnd(36)} ${run.ms.toFixed(0).padStart(7)} ms  ${run.cpu.toFixed(2).padStart(6)} s CPU  ${run.rss.toFixed(0).padStart(5)} MiB`)

/** An empty series, filled by hand. */
export const series = (name: string): Series => ({ name, ms: [], cpu: [], rss: [] })

/** Adds a run to a series (and shows it). */
export const record = (into: Series, run: Run) => {
  ;(into.ms as Array<number>).push(run.ms)
  ;(into.cpu as Array<number>).push(run.cpu)
  ;(into.rss as Array<number>).push(run.rss)
  show(into.name, run)
}

/** Interleaved rounds: in each round every case runs once, in an order that alternates. */
export const rounds = (count: number, cases: Record<string, () => Run>, before?: (name: string) => void) => {
  const names = Object.keys(cases)
  const all: Record<string, Series> = Object.fromEntries(names.map((name) => [name, series(name)]))
  for (let round = 0; round < count; round++) {
    for (const name of round % 2 === 0 ? names : [...names].reverse()) {
      before?.(name)
      record(all[name]!, cases[name]!())
    }
  }
  return all
}

interface Server {
  readonly kind: "nginx" | "node"
  readonly base: string
  /** The folder's URL at `rate` per connection (nginx limit_rate): the first rate, and those asked for. */
  readonly capped: string | undefined
  readonly cappedAt: (rate: string) => string | undefined
  readonly stop: () => void
}

/** nginx serving `folder` on loopback (and under /capped-<rate>/ at each rate per connection), else the tests' server. */
export const startServer = async (
  folder: string,
  work: string,
  capRate: string,
  moreRates: ReadonlyArray<string> = []
): Promise<Server> => {
  const rates = [capRate, ...moreRates]
  if (has("nginx")) {
    const prefix = path.join(work, "nginx")
    fs.mkdirSync(path.join(prefix, "logs"), { recursive: true })
    const port = 20000 + Math.floor(Math.random() * 20000)
    fs.writeFileSync(
      path.join(prefix, "nginx.conf"),
      `worker_processes 1;
daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${folder};
${rates.map((rate) => `    location /capped-${rate}/ { alias ${folder}/; limit_rate ${rate}; }`).join("\n")}
  }
}
`
    )
    const child = spawn("nginx", ["-c", path.join(prefix, "nginx.conf"), "-p", prefix], { stdio: "ignore" })
    const base = `http://127.0.0.1:${port}`
    for (let i = 0; i < 200; i++) {
      const probe = spawnSync("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", `${base}/nothing`])
      if (probe.stdout.toString() === "404") break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const cappedAt = (rate: string) => (rates.includes(rate) ? `${base}/capped-${rate}` : undefined)
    return { kind: "nginx", base, capped: cappedAt(capRate), cappedAt, stop: () => child.kill() }
  }
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "bench", "http-folder.ts"), folder], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  const base = await new Promise<string>((resolve) => {
    let out = ""
    child.stdout.on("data", (chunk) => {
      out += chunk
      if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0]!).base)
    })
  })
  return { kind: "node", base, capped: undefined, cappedAt: () => undefined, stop: () => child.kill() }
}

export const peersBenchmark = async (options: {
  readonly work: string
  readonly fetchDir: string
  readonly sizeMiB: number
  readonly rounds: number
  readonly manyFiles: number
  readonly capRate: string
  /** The second capped case's rate, where eight connections are not enough for aria2c either to wait. */
  readonly fastCapRate: string
}) => {
  const { work, fetchDir } = options
  // The command as published (built by bench/run.ts); its V8 code cache is written by a first run,
  // as after a user's first.
  const env = { ...process.env, XDG_CACHE_HOME: path.join(work, "xdg") }
  timed(process.execPath, [bin, "--version"], env)

  // The files the server serves.
  const folder = path.join(work, "www")
  fs.mkdirSync(path.join(folder, "many"), { recursive: true })
  // nginx's workers (as root: the user nobody) must read them: the temp folder is made 0700.
  for (const dir of [work, folder, path.join(folder, "many")]) fs.chmodSync(dir, 0o755)
  const smallSize = 50 * 1024
  for (let i = 0; i < options.manyFiles; i++) {
    fs.writeFileSync(path.join(folder, "many", `f${String(i).padStart(5, "0")}.bin`), Buffer.alloc(smallSize, i & 0xff))
  }
  const big = path.join(folder, "big.bin")
  const chunk = Buffer.alloc(MiB)
  const fd = fs.openSync(big, "w")
  for (let i = 0; i < options.sizeMiB; i++) fs.writeSync(fd, chunk.fill((i * 13) & 0xff))
  fs.closeSync(fd)
  execFileSync("cat", [big], { stdio: ["ignore", "ignore", "inherit"] })

  const server = await startServer(folder, work, options.capRate, [options.fastCapRate])
  try {
    console.log(`HTTP server: ${server.kind === "nginx" ? "nginx" : "the tests' Node server (nginx is not installed)"}`)
    const out = path.join(fetchDir, "mlup-storage-bench-out")
    const cacheDir = path.join(fetchDir, "mlup-storage-bench-cache")
    const clean = () => {
      fs.rmSync(out, { recursive: true, force: true })
      fs.rmSync(cacheDir, { recursive: true, force: true })
      fs.mkdirSync(out, { recursive: true })
    }
    const urls = Array.from({ length: options.manyFiles }, (_, i) => `${server.base}/many/f${String(i).padStart(5, "0")}.bin`)
    const oneUrl = urls[0]!
    const oneKwargs = JSON.stringify({ cache_dir: cacheDir })

    console.log("start-up: node -e 0, mlup-storage --help and check, import \"mlup-storage\"; one cached file (304)")
    const indexUrl = pathToFileURL(path.join(root, "dist", "index.js")).href
    clean()
    timed(process.execPath, [bin, "fetch", oneUrl, "-k", oneKwargs, "-q"], env)
    const startup = rounds(options.rounds * 2, {
      "node -e 0": () => timed(process.execPath, ["-e", "0"]),
      "mlup-storage --help": () => timed(process.execPath, [bin, "--help"], env),
      "mlup-storage check": () => timed(process.execPath, [bin, "check", oneUrl, "-k", oneKwargs], env),
      "mlup-storage fetch, cached (304)": () => timed(process.execPath, [bin, "fetch", oneUrl, "-k", oneKwargs, "-q"], env),
      "curl -o (the whole file)": () => timed("curl", ["-s", "-f", "-o", path.join(out, "one.bin"), oneUrl]),
      "import \"mlup-storage\"": () =>
        timed(process.execPath, ["--input-type=module", "-e", `await import(${JSON.stringify(indexUrl)})`]),
      "import \"effect/Schema\" alone": () =>
        timed(process.execPath, ["--input-type=module", "-e", "await import(\"effect/Schema\")"], { ...process.env, NODE_PATH: "" })
    })

    // Many files.
    const curlConfig = path.join(work, "curl-many.txt")
    fs.writeFileSync(curlConfig, urls.map((url, i) => `url = ${url}\noutput = ${out}/f${i}.bin\n`).join(""))
    const manyConfig = path.join(work, "many.json")
    fs.writeFileSync(manyConfig, JSON.stringify({ storage_type: "http", storage_kwargs: { urls, cache_dir: cacheDir } }))
    const plain = path.join(root, "bench", "many-plain.mjs")
    console.log(`${options.manyFiles} files of 50 KiB`)
    // Interleaved by hand: the warm run always follows a cold one, into the cache it filled.
    const many = {
      curl: series("curl -Z --parallel-max 8"),
      plain: series("plain Node, the same work"),
      cold: series("mlup-storage fetch, cold"),
      warm: series("mlup-storage fetch, warm (304s)")
    }
    for (let round = 0; round < options.rounds; round++) {
      const peers = () => {
        clean()
        record(many.curl, timed("curl", ["-s", "-f", "-Z", "--parallel-max", "8", "-K", curlConfig]))
        clean()
        record(many.plain, timed(process.execPath, [plain, server.base, String(options.manyFiles), out]))
      }
      const command = () => {
        clean()
        record(many.cold, timed(process.execPath, [bin, "fetch", "-c", manyConfig, "-q"], env))
        record(many.warm, timed(process.execPath, [bin, "fetch", "-c", manyConfig, "-q"], env))
      }
      if (round % 2 === 0) {
        peers()
        command()
      } else {
        command()
        peers()
      }
    }

    // One large file.
    console.log(`${options.sizeMiB} MiB over HTTP`)
    const bigUrl = `${server.base}/big.bin`
    const kwargs = (extra: Record<string, unknown> = {}) => JSON.stringify({ cache_dir: cacheDir, ...extra })
    const large = rounds(options.rounds, {
      "curl -o": () => timed("curl", ["-s", "-f", "-o", path.join(out, "big.bin"), bigUrl]),
      "mlup-storage fetch (parts)": () => timed(process.execPath, [bin, "fetch", bigUrl, "-k", kwargs(), "-q"], env),
      "mlup-storage fetch (one stream)": () =>
        timed(process.execPath, [bin, "fetch", bigUrl, "-k", kwargs({ part_concurrency: 1 }), "-q"], env)
    }, clean)

    const cappedCase = (rate: string) => {
      const base = server.cappedAt(rate)
      if (base === undefined || !has("aria2c")) return undefined
      console.log(`${options.sizeMiB} MiB from a server that caps each connection (nginx limit_rate ${rate})`)
      const cappedUrl = `${base}/big.bin`
      return rounds(options.rounds, {
        "aria2c -x8 -s8 -k1M": () =>
          timed("aria2c", ["-x8", "-s8", "-k1M", "-q", "--allow-overwrite=true", "-d", out, "-o", "big.bin", cappedUrl]),
        "mlup-storage fetch (parts)": () => timed(process.execPath, [bin, "fetch", cappedUrl, "-k", kwargs(), "-q"], env)
      }, clean)
    }
    const capped = cappedCase(options.capRate)
    const fastCapped = cappedCase(options.fastCapRate)
    clean()
    fs.rmSync(out, { recursive: true, force: true })
    return { server: server.kind, startup, many, large, capped, fastCapped, manyFiles: options.manyFiles, bigUrl }
  } finally {
    server.stop()
    fs.rmSync(folder, { recursive: true, force: true })
  }
}

const fmt = (r: { median: number; min: number; max: number }) => `${r.median.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`
const verdict = (ok: boolean) => (ok ? "met" : "**not met**")
/** A contender's median time, CPU (per GiB when `gib` is given) and peak RSS. */
export const cell = (s: Series, gib?: number) =>
  `${median(s.ms).toFixed(0)} ms; CPU ${
    gib === undefined ? `${median(s.cpu).toFixed(2)} s` : `${(median(s.cpu) / gib).toFixed(2)} s/GiB`
  }; ${median(s.rss).toFixed(0)} MiB`

export const peersReport = (
  result: Awaited<ReturnType<typeof peersBenchmark>>,
  options: { readonly sizeMiB: number; readonly rounds: number; readonly capRate: string; readonly fastCapRate: string }
) => {
  const s = result.startup
  const node0 = s["node -e 0"]!
  const help = ratioOf(s["mlup-storage --help"]!, node0)
  const check = ratioOf(s["mlup-storage check"]!, node0)
  const cached = ratioOf(s["mlup-storage fetch, cached (304)"]!, node0)
  const imp = ratioOf(s["import \"mlup-storage\""]!, node0)
  const schema = ratioOf(s["import \"effect/Schema\" alone"]!, node0)
  const m = result.many
  const cold = ratioOf(m.cold, m.curl)
  const plainRatio = ratioOf(m.plain, m.curl)
  const coldPlain = ratioOf(m.cold, m.plain)
  const warm = median(m.warm.ms)
  const l = result.large
  const gib = options.sizeMiB / 1024
  const parts = ratioOf(l["mlup-storage fetch (parts)"]!, l["curl -o"]!)
  const single = ratioOf(l["mlup-storage fetch (one stream)"]!, l["curl -o"]!)
  const peakRss = Math.max(median(l["mlup-storage fetch (parts)"]!.rss), median(l["mlup-storage fetch (one stream)"]!.rss))
  const cappedRow = (c: Record<string, Series> | undefined, rate: string) => {
    if (c === undefined) {
      return `| ${options.sizeMiB} MiB, each connection capped (\`limit_rate ${rate}\`), against \`aria2c -x8 -s8 -k1M\` | not measured (needs nginx and aria2c) | | | |`
    }
    const aria = c["aria2c -x8 -s8 -k1M"]!
    const ours = c["mlup-storage fetch (parts)"]!
    const speed = ratioOf(aria, ours)
    const cpu = median(ours.cpu) / median(aria.cpu)
    return `| ${options.sizeMiB} MiB, each connection capped (nginx \`limit_rate ${rate}\`), against \`aria2c -x8 -s8 -k1M\` | ${cell(aria, gib)} | ${
      cell(ours, gib)
    } | ${fmt(speed)} × the speed; CPU ${cpu.toFixed(2)} × aria2c's | speed ≥ 1.0×: ${verdict(speed.median >= 1)}; CPU ≤ 1.3×: ${
      verdict(cpu <= 1.3)
    } |`
  }
  return `## The command line against curl and aria2c (whole processes)

Each case is a whole process, the command's start-up included (as curl's is); the command is
\`dist/bin.js\` as published, its V8 code cache written by one run beforehand (as after a user's first
run). HTTP server: ${result.server === "nginx" ? "nginx (Debian's nginx-light) on 127.0.0.1, one worker, sendfile on" : "the tests' Node server (nginx is not installed here)"}. Rounds are interleaved; a ratio is
the median of the per-round ratios, with their minimum and maximum. Each contender's cell gives its
median wall time, its CPU time (user + system, every thread; per GiB delivered for the large files)
and its peak RSS, from \`getrusage\` of the child (what GNU time prints). Files go to \`BENCH_FETCH_DIR\`.

| case | peer | mlup-storage | ratio (per round: median, min–max) | goal |
| --- | --- | --- | ---: | --- |
| \`--help\` against \`node -e 0\` (${options.rounds * 2} rounds) | ${cell(node0)} | ${cell(s["mlup-storage --help"]!)} | ${fmt(help)} × | ≤ 2×: ${verdict(help.median <= 2)} |
| \`check <url>\` (validates, fetches nothing) against \`node -e 0\` | | ${cell(s["mlup-storage check"]!)} | ${fmt(check)} × | ≤ 2×: ${verdict(check.median <= 2)} |
| one cached file (the server answers 304) against \`node -e 0\` (\`curl -o\` of the whole file: ${
    median(s["curl -o (the whole file)"]!.ms).toFixed(0)
  } ms) | | ${cell(s["mlup-storage fetch, cached (304)"]!)} | ${fmt(cached)} × | ≤ 2×: ${verdict(cached.median <= 2)} |
| \`import "mlup-storage"\` in a fresh process | | ${cell(s["import \"mlup-storage\""]!)} | ${fmt(imp)} × | ≤ 150 ms: ${verdict(median(s["import \"mlup-storage\""]!.ms) <= 150)} |
| (its floor: \`import "effect/Schema"\` alone) | | ${cell(s["import \"effect/Schema\" alone"]!)} | ${fmt(schema)} × | |
| ${result.manyFiles.toLocaleString("en")} × 50 KiB, cold cache, against \`curl -Z --parallel-max 8\` | ${cell(m.curl)} | ${cell(m.cold)} | ${fmt(cold)} × the time | ≤ 5×: ${verdict(cold.median <= 5)} |
| (reference: plain Node doing the same work, bench/many-plain.mjs) | ${cell(m.plain)} | | ${fmt(plainRatio)} × curl's time; the command ${fmt(coldPlain)} × this | |
| the same files again, all cached (every answer a 304) | | ${cell(m.warm)} | | ≤ 0.5 s: ${verdict(warm <= 500)} |
| ${options.sizeMiB} MiB, \`curl -o\` against the command (parallel parts, the default) | ${cell(l["curl -o"]!, gib)} | ${cell(l["mlup-storage fetch (parts)"]!, gib)} | ${fmt(parts)} × the time | ≤ 1.3×: ${verdict(parts.median <= 1.3)} |
| the same, one stream (\`part_concurrency: 1\`) | | ${cell(l["mlup-storage fetch (one stream)"]!, gib)} | ${fmt(single)} × the time | ≤ 1.3×: ${verdict(single.median <= 1.3)} |
| peak RSS of the command fetching ${options.sizeMiB} MiB (the larger of the two rows above) | | ${peakRss.toFixed(0)} MiB | | ≤ 64 MiB: ${verdict(peakRss <= 64)} |
${cappedRow(result.capped, options.capRate)}
${cappedRow(result.fastCapped, options.fastCapRate)}
`
}
