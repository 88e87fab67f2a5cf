// npm run bench:archives (also the last step of npm run bench): a packed model
// fetched from nginx on loopback and unpacked, against the tools people pipe
// together for it, as whole processes in interleaved rounds:
//
//   model.tar.gz  `mlup-storage fetch URL --unpack auto --to DIR` against
//                 `curl -sf URL | tar -xzf - -C DIR` (and, to show where the
//                 time goes, `curl -o` alone and `tar -xzf` of the local file)
//   model.zip     the same against `curl -o model.zip URL && unzip -q model.zip -d DIR`
//
// The model: four files of weights (float32 values drawn from a normal
// distribution, as trained weights are: gzip keeps ~90% of their size), in a
// folder, packed by GNU tar + gzip -1 and by Info-ZIP's zip -1.
// Writes its section of docs/performance.md (between the archives markers).
//
// Environment: BENCH_ARCHIVE_MIB (default 1024), BENCH_ROUNDS (default 5),
// BENCH_DIR (default: a folder under the OS temp dir).
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cell, has, median, ratioOf, rounds, type Series, startServer, timed } from "./peers.js"

const MiB = 1024 * 1024
const sizeMiB = Number(process.env["BENCH_ARCHIVE_MIB"] ?? 1024)
const roundCount = Number(process.env["BENCH_ROUNDS"] ?? 5)
const root = path.resolve(import.meta.dirname, "..")
const work = fs.mkdtempSync(path.join(process.env["BENCH_DIR"] ?? os.tmpdir(), "mlup-storage-bench-archives-"))
fs.chmodSync(work, 0o755)

execFileSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" })
const bin = path.join(root, "dist", "bin.js")
const env = { ...process.env, XDG_CACHE_HOME: path.join(work, "xdg") }

// The weights: float32 values of a normal distribution (Irwin–Hall: the sum of four uniforms), 64 MiB at a time.
const writeWeights = (file: string, bytes: number, seed: number) => {
  const fd = fs.openSync(file, "w")
  const floats = new Float32Array(16 * MiB)
  let x = seed >>> 0 || 1
  const uniform = () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 4294967296
  }
  for (let written = 0; written < bytes;) {
    for (let i = 0; i < floats.length; i++) floats[i] = (uniform() + uniform() + uniform() + uniform() - 2) * 0.05
    const chunk = Buffer.from(floats.buffer, 0, Math.min(floats.byteLength, bytes - written))
    fs.writeSync(fd, chunk)
    written += chunk.byteLength
  }
  fs.closeSync(fd)
}

const src = path.join(work, "src")
const www = path.join(work, "www")
fs.mkdirSync(path.join(src, "model"), { recursive: true })
fs.mkdirSync(www, { recursive: true })
fs.chmodSync(www, 0o755)
console.log(`making a ${sizeMiB} MiB model and packing it (tar + gzip -1, zip -1)`)
for (let i = 0; i < 4; i++) writeWeights(path.join(src, "model", `weights-${i}.bin`), (sizeMiB / 4) * MiB, i + 1)
fs.writeFileSync(path.join(src, "model", "config.json"), JSON.stringify({ layers: 4, dtype: "float32" }))
execFileSync("sh", ["-c", `tar -cf - -C "${src}" model | gzip -1 > "${www}/model.tar.gz"`])
const zipped = has("zip")
if (zipped) execFileSync("zip", ["-q", "-1", "-r", path.join(www, "model.zip"), "model"], { cwd: src })
fs.rmSync(src, { recursive: true, force: true })
const tgzBytes = fs.statSync(path.join(www, "model.tar.gz")).size
const zipBytes = zipped ? fs.statSync(path.join(www, "model.zip")).size : 0
for (const name of fs.readdirSync(www)) fs.chmodSync(path.join(www, name), 0o644)
// The server reads them from the page cache, as a warm CDN would.
execFileSync("sh", ["-c", `cat "${www}"/* > /dev/null`])

const server = await startServer(www, work, "20m")
const out = path.join(work, "out")
const cacheDir = path.join(work, "cache")
const local = path.join(work, "local")
fs.mkdirSync(local, { recursive: true })
const clean = () => {
  for (const dir of [out, cacheDir]) fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(out, { recursive: true })
  for (const name of fs.readdirSync(local)) fs.rmSync(path.join(local, name), { recursive: true, force: true })
}
const kwargs = JSON.stringify({ cache_dir: cacheDir })
const ours = (name: string) => () => timed(process.execPath, [bin, "fetch", `${server.base}/${name}`, "--unpack", "auto", "-k", kwargs, "--to", out, "-q"], env)

let tgz: Record<string, Series>
let zip: Record<string, Series> | undefined
let warm: Series
try {
  console.log(`HTTP server: ${server.kind}; model.tar.gz ${(tgzBytes / MiB).toFixed(0)} MiB`)
  // A first run writes the command's V8 code cache, as after a user's first run.
  clean()
  ours("model.tar.gz")()
  tgz = rounds(roundCount, {
    "curl | tar -xzf": () => timed("sh", ["-c", `curl -sf "${server.base}/model.tar.gz" | tar -xzf - -C "${out}"`]),
    "mlup-storage fetch --unpack auto --to": ours("model.tar.gz"),
    "curl -o (download alone)": () => timed("curl", ["-sf", "-o", path.join(local, "model.tar.gz"), `${server.base}/model.tar.gz`]),
    "tar -xzf (unpacking alone, local)": () => {
      if (!fs.existsSync(path.join(local, "model.tar.gz"))) execFileSync("cp", [path.join(www, "model.tar.gz"), local])
      return timed("tar", ["-xzf", path.join(local, "model.tar.gz"), "-C", out])
    }
  }, clean)
  // Warm: the same command again, nothing changed on the server (one conditional request, the tree reused).
  clean()
  ours("model.tar.gz")()
  warm = rounds(roundCount, {
    "mlup-storage fetch --unpack auto, warm": () => {
      fs.rmSync(out, { recursive: true, force: true })
      return ours("model.tar.gz")()
    }
  })["mlup-storage fetch --unpack auto, warm"]!
  if (zipped) {
    console.log(`model.zip ${(zipBytes / MiB).toFixed(0)} MiB`)
    zip = rounds(roundCount, {
      "curl -o && unzip": () =>
        timed("sh", ["-c", `curl -sf -o "${local}/model.zip" "${server.base}/model.zip" && unzip -q "${local}/model.zip" -d "${out}"`]),
      "mlup-storage fetch --unpack auto --to (zip)": ours("model.zip")
    }, clean)
  }
} finally {
  server.stop()
  fs.rmSync(work, { recursive: true, force: true })
}

const gib = sizeMiB / 1024
const fmt = (r: { median: number; min: number; max: number }) => `${r.median.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`
const verdict = (ok: boolean) => (ok ? "met" : "**not met**")
const tgzRatio = ratioOf(tgz["mlup-storage fetch --unpack auto --to"]!, tgz["curl | tar -xzf"]!)
const row = (s: Series, against?: Series) =>
  `| ${s.name.replaceAll("|", "\\|")} | ${cell(s, gib)} | ${against === undefined ? "" : fmt(ratioOf(s, against))} |`
const section = `<!-- archives:start (written by npm run bench:archives, the last step of npm run bench) -->
## Packed models: fetching and unpacking a ${sizeMiB} MiB model

\`npm run bench:archives\` (${new Date().toISOString().slice(0, 10)}, ${roundCount} interleaved rounds, whole processes,
cold: an empty cache and an empty target each round). The model: four files of float32 weights drawn from a normal
distribution and a config, ${sizeMiB} MiB, packed by GNU tar + \`gzip -1\` (${(tgzBytes / MiB).toFixed(0)} MiB) and by
Info-ZIP's \`zip -1\` (${zipped ? `${(zipBytes / MiB).toFixed(0)} MiB` : "not measured: zip is not installed"}), served by
${server.kind === "nginx" ? "nginx (Debian's nginx-light) on 127.0.0.1" : "the tests' Node server"}. Ours:
\`mlup-storage fetch URL --unpack auto --to DIR\` (the archive into the cache, checked and kept for a resume; the
tree unpacked under the archive's sha256 while it arrives, then linked into \`DIR\`). Time ratio: ours / the
baseline's per round, median (min–max). CPU: user + system of every thread, per GiB of model.

| contender | median time; CPU; peak RSS | time ratio to the baseline |
| --- | ---: | ---: |
${row(tgz["curl | tar -xzf"]!)}
${row(tgz["mlup-storage fetch --unpack auto --to"]!, tgz["curl | tar -xzf"]!)}
${row(tgz["curl -o (download alone)"]!)}
${row(tgz["tar -xzf (unpacking alone, local)"]!)}
${row(warm)}
${zip === undefined ? "" : `${row(zip["curl -o && unzip"]!)}\n${row(zip["mlup-storage fetch --unpack auto --to (zip)"]!, zip["curl -o && unzip"]!)}\n`}
Goal: fetch and unpack the model.tar.gz in at most 1.3 × the time of \`curl | tar xz\`: ${fmt(tgzRatio)},
${verdict(tgzRatio.median <= 1.3)}. The warm row is a second fetch of the same archive (one conditional
request, the tree reused, linked into \`DIR\`): ${median(warm.ms).toFixed(0)} ms. A zip is unpacked once it is complete (its
listing is at its end), as \`curl -o && unzip\` does; ours also hashes it (the key of its tree) and checks each entry's
CRC-32 (Info-ZIP does too), no goal was set for it.
<!-- archives:end -->
`
const doc = path.join(root, "docs", "performance.md")
const text = fs.readFileSync(doc, "utf8")
const marked = /<!-- archives:start[\s\S]*?<!-- archives:end -->\n/
fs.writeFileSync(doc, marked.test(text) ? text.replace(marked, section) : text.replace(/\n## Reproduce\n/, `\n${section}\n## Reproduce\n`))
console.log(`\nwrote the archives' section of docs/performance.md`)
