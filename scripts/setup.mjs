// Installs the project's dependencies when they are missing or older than
// package-lock.json, so that `npm run demo` and `npm test` work on a fresh
// clone. Uses only Node's standard library: it runs before anything is installed.
import { createHash } from "node:crypto"
import { execSync } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"

const lock = readFileSync(new URL("../package-lock.json", import.meta.url))
const digest = createHash("sha256").update(lock).digest("hex")
const stamp = new URL("../node_modules/.mlup-storage-setup", import.meta.url)

if (!existsSync(stamp) || readFileSync(stamp, "utf8") !== digest) {
  console.log("[setup] installing dependencies (npm ci)…")
  // onnxruntime-node ships its CPU binaries in the package; its install script
  // would download more, which fails offline.
  execSync("npm ci --no-audit --no-fund", {
    stdio: "inherit",
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" }
  })
  writeFileSync(stamp, digest)
}
