// npm run bench:registry (also a step of npm run bench): a 1 GiB single-layer
// OCI artifact (as `oras push` makes one: the file as a layer named by its
// title) from Debian's docker-registry on loopback, as whole processes in
// interleaved rounds:
//
//   mlup-storage fetch oci://… --to DIR      (checked against the layer's digest)
//   skopeo copy docker://… dir:DIR           (checks the digest too)
//   curl -o of the raw blob                  (checks nothing)
//
// Writes its section of docs/performance.md (between the registry markers).
// Environment: BENCH_REGISTRY_MIB (default 1024), BENCH_ROUNDS (default 5),
// BENCH_DIR (default: a folder under the OS temp dir).
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Registry from "../test/servers/registry.js"
import { cell, has, median, ratioOf, rounds, type Series, timed } from "./peers.js"

const MiB = 1024 * 1024
const sizeMiB = Number(process.env["BENCH_REGISTRY_MIB"] ?? 1024)
const roundCount = Number(process.env["BENCH_ROUNDS"] ?? 5)
const root = path.resolve(import.meta.dirname, "..")
const work = fs.mkdtempSync(path.join(process.env["BENCH_DIR"] ?? os.tmpdir(), "mlup-storage-bench-registry-"))
if (!fs.existsSync(Registry.binary)) {
  console.log(`${Registry.binary} is missing (apt-get install docker-registry skopeo): the registry's section is not measured`)
  process.exit(0)
}
execFileSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" })
const bin = path.join(root, "dist", "bin.js")
const env = { ...process.env, XDG_CACHE_HOME: path.join(work, "xdg") }

// The tests' registry (test/servers/registry.ts): Debian's docker-registry, anonymous, on loopback.
const scope = Effect.runSync(Scope.make())
const registry = await Effect.runPromise(Scope.extend(Registry.make(), scope))
// Whatever happens below, the registry is stopped with the process.
process.on("exit", () => void Effect.runFork(Scope.close(scope, Exit.void)))
const { endpoint } = registry

// The artifact: one file of weights (float32 values of a normal distribution), pushed with curl as ORAS pushes it.
const weights = path.join(work, "weights.bin")
{
  const fd = fs.openSync(weights, "w")
  const floats = new Float32Array(16 * MiB)
  let x = 99
  const uniform = () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 4294967296
  }
  for (let written = 0; written < sizeMiB * MiB;) {
    for (let i = 0; i < floats.length; i++) floats[i] = (uniform() + uniform() + uniform() + uniform() - 2) * 0.05
    const chunk = Buffer.from(floats.buffer, 0, Math.min(floats.byteLength, sizeMiB * MiB - written))
    fs.writeSync(fd, chunk)
    written += chunk.byteLength
  }
  fs.closeSync(fd)
}
const digestOf = (file: string) => `sha256:${execFileSync("sha256sum", [file], { encoding: "utf8" }).split(" ")[0]}`
const pushBlob = (file: string) => {
  const digest = digestOf(file)
  const location = execFileSync("sh", ["-c", `curl -sf -D - -o /dev/null -X POST "${endpoint}/v2/bench/model/blobs/uploads/" | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p'`], { encoding: "utf8" }).trim()
  const url = new URL(location, endpoint)
  url.searchParams.set("digest", digest)
  execFileSync("curl", ["-sf", "-X", "PUT", "-H", "content-type: application/octet-stream", "-T", file, url.href])
  return { digest, size: fs.statSync(file).size }
}
console.log(`pushing a ${sizeMiB} MiB artifact to docker-registry on ${endpoint}`)
const layer = pushBlob(weights)
const emptyFile = path.join(work, "empty.json")
fs.writeFileSync(emptyFile, "{}")
const config = pushBlob(emptyFile)
const manifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  artifactType: "application/vnd.mlup-storage.model.v1",
  config: { mediaType: "application/vnd.oci.empty.v1+json", ...config },
  layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", ...layer, annotations: { "org.opencontainers.image.title": "weights.bin" } }]
})
execFileSync("curl", ["-sf", "-X", "PUT", "-H", "content-type: application/vnd.oci.image.manifest.v1+json", "--data-binary", manifest, `${endpoint}/v2/bench/model/manifests/v1`])
fs.rmSync(weights)
// The registry reads the blob from the page cache, as a warm registry would.
execFileSync("sh", ["-c", `find "${registry.root}" -type f -name data -exec cat {} + > /dev/null`])

const out = path.join(work, "out")
const cacheDir = path.join(work, "cache")
const clean = () => {
  for (const dir of [out, cacheDir]) fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(out, { recursive: true })
}
const reference = `oci://${registry.host}/bench/model:v1`
const ours = () => timed(process.execPath, [bin, "fetch", reference, "-k", JSON.stringify({ insecure: true, cache_dir: cacheDir }), "--to", out, "-q"], env)
const skopeo = has("skopeo")
let results: Record<string, Series>
try {
  clean()
  ours()
  results = rounds(roundCount, {
    "mlup-storage fetch oci:// --to": ours,
    ...(skopeo
      ? {
        "skopeo copy docker:// dir:": () =>
          timed("skopeo", ["copy", "--quiet", "--src-tls-verify=false", `docker://${registry.host}/bench/model:v1`, `dir:${out}/skopeo`])
      }
      : {}),
    "curl -o (the raw blob)": () => timed("curl", ["-sf", "-o", path.join(out, "blob"), `${endpoint}/v2/bench/model/blobs/${layer.digest}`])
  }, clean)
} finally {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  fs.rmSync(work, { recursive: true, force: true })
}

const gib = sizeMiB / 1024
const fmt = (r: { median: number; min: number; max: number }) => `${r.median.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`
const ourSeries = results["mlup-storage fetch oci:// --to"]!
const speedAgainst = (s: Series) => {
  const r = ratioOf(s, ourSeries)
  return `${fmt(r)}`
}
const row = (s: Series, ratio: string) => `| ${s.name} | ${cell(s, gib)} | ${ratio} |`
const skopeoSeries = results["skopeo copy docker:// dir:"]
const curlSeries = results["curl -o (the raw blob)"]!
const baseline = skopeoSeries ?? curlSeries
const goal = ratioOf(baseline, ourSeries)
const section = `<!-- registry:start (written by npm run bench:registry, a step of npm run bench) -->
## An OCI artifact: ${sizeMiB} MiB, one layer, from a registry

\`npm run bench:registry\` (${new Date().toISOString().slice(0, 10)}, ${roundCount} interleaved rounds, whole processes, cold:
an empty cache and target each round). One layer of ${sizeMiB} MiB (float32 weights), pushed as \`oras push\` pushes a
file (a layer named by its title, an empty config), served by Debian's \`docker-registry\` (the CNCF distribution
registry 2.8) on 127.0.0.1 over plain HTTP. Ours: \`mlup-storage fetch oci://… --to DIR\` (the layer checked
against its digest, kept in the cache, linked into \`DIR\`); skopeo ${skopeo ? "1.9 (Debian's)" : "(not installed: not measured)"} checks the
digest too; curl fetches the raw blob and checks nothing. Speed ratio: theirs' time / ours per round (above 1:
ours is faster), median (min–max). CPU: user + system of every thread, per GiB.

| contender | median time; CPU; peak RSS | speed of ours against it |
| --- | ---: | ---: |
${row(ourSeries, "")}
${skopeoSeries === undefined ? "" : `${row(skopeoSeries, speedAgainst(skopeoSeries))}\n`}${row(curlSeries, speedAgainst(curlSeries))}

Goal: at least the speed of ${skopeoSeries === undefined ? "the raw blob with curl" : "skopeo"}: ${fmt(goal)}, ${goal.median >= 1 ? "met" : "**not met**"}
(median time ${median(ourSeries.ms).toFixed(0)} ms against ${median(baseline.ms).toFixed(0)} ms).
<!-- registry:end -->
`
const doc = path.join(root, "docs", "performance.md")
const text = fs.readFileSync(doc, "utf8")
const marked = /<!-- registry:start[\s\S]*?<!-- registry:end -->\n/
fs.writeFileSync(doc, marked.test(text) ? text.replace(marked, section) : text.replace(/\n## Reproduce\n/, `\n${section}\n## Reproduce\n`))
console.log(`\nwrote the registry's section of docs/performance.md`)
