// Installs the project's dependencies when they are missing or differ from
// package-lock.json, so that `npm run demo` and `npm test` work on a fresh
// clone, and do nothing more after a plain `npm ci` or `npm install`. Uses
// only Node's standard library: it runs before anything is installed.
import { execSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"

const read = (path) => JSON.parse(readFileSync(new URL(path, import.meta.url), "utf8"))

// npm records what it installed in node_modules/.package-lock.json: every
// package of the lock must be there at its version (optional ones, such as
// other platforms' binaries, may be absent).
const installed = () => {
  if (!existsSync(new URL("../node_modules/.package-lock.json", import.meta.url))) return false
  const wanted = read("../package-lock.json").packages
  const have = read("../node_modules/.package-lock.json").packages
  return Object.entries(wanted).every(([key, entry]) =>
    key === "" || have[key]?.version === entry.version || (entry.optional === true && have[key] === undefined)
  )
}

if (!installed()) {
  console.log("[setup] installing dependencies (npm ci)…")
  // onnxruntime-node ships its CPU binaries in the package; its install script
  // would download CUDA libraries, which fails offline. npm 11 skips it (the
  // allowScripts field of package.json); older npm needs the variable.
  execSync("npm ci", { stdio: "inherit", env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" } })
}

// The tests start a real OCI registry, Debian's docker-registry package (the CNCF distribution
// registry), and push images to it with skopeo. Installed here when missing and this user may
// (root, with apt-get); otherwise the registry's tests say how to install them.
const tools = ["/usr/bin/docker-registry", "/usr/bin/skopeo"]
const can = (command) => {
  try {
    execSync(`command -v ${command}`, { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}
const missing = tools.filter((tool) => !existsSync(tool))
if (missing.length > 0 && process.getuid?.() === 0 && can("apt-get")) {
  console.log("[setup] installing docker-registry and skopeo (apt-get), for the OCI storage's tests…")
  const install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry skopeo"
  try {
    execSync(install, { stdio: "inherit" })
  } catch {
    execSync(`apt-get update -q && ${install}`, { stdio: "inherit" })
  }
} else if (missing.length > 0) {
  console.log("[setup] docker-registry or skopeo is missing: the OCI storage's tests need them (sudo apt-get install docker-registry skopeo)")
}
