/**
 * The tests' Hub as a process of its own, for scripts/check-hub-server.py:
 * starts it with a few repositories and prints, as one line of JSON, its
 * endpoint, the commits and the sha256 of every file; runs until stdin ends.
 */
import * as crypto from "node:crypto"
import { TestHub } from "./hub.js"

const bytes = (size: number, seed: number) => {
  const out = Buffer.alloc(size)
  for (let i = 0; i < size; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff
  return out
}

const hub = new TestHub()
await hub.listen()
const iris = {
  "model.onnx": bytes(300_000, 1),
  "config.json": JSON.stringify({ architectures: ["IrisClassifier"] }),
  "onnx/model_quantized.onnx": bytes(50_000, 2),
  "README.md": "# iris\n"
}
const commits = {
  iris: hub.push("acme/iris", iris),
  secret: hub.push("acme/secret", { "weights.bin": bytes(20_000, 3) }, { visibility: "private" }),
  gated: hub.push("acme/gated", { "weights.bin": bytes(20_000, 4) }, { visibility: "gated" }),
  flowers: hub.push("acme/flowers", { "train/a.csv": "a,b\n1,2\n" }, { type: "dataset" })
}
hub.tag("acme/iris", "v1", commits.iris)
hub.grant("acme/secret", "hf_check_token")
hub.treePageSize = 2
const sha256 = Object.fromEntries(
  Object.entries(iris).map(([name, content]) => [name, crypto.createHash("sha256").update(content).digest("hex")])
)
process.stdout.write(`${JSON.stringify({ endpoint: hub.endpoint, cdn: hub.cdnOrigin, commits, sha256 })}\n`)
process.stdin.resume()
process.stdin.on("end", () => void hub.close().then(() => process.exit(0)))
