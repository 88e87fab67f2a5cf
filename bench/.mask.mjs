import * as fs from "node:fs"
import * as mask from "../dist/internal/mask.js"
import * as Either from "effect/Either"
const folder = "/tmp/pw/many100k"
const re = Either.getOrThrow(mask.compile(String.raw`model\.onnx$`))
console.log(re, re.flags)
for (let k = 0; k < 5; k++) {
  let t = performance.now(); const a = fs.readdirSync(folder); const t1 = performance.now() - t
  t = performance.now(); const b = await fs.promises.readdir(folder); const t2 = performance.now() - t
  t = performance.now(); const m = b.filter((n) => re.test(n)); const t3 = performance.now() - t
  const plain = /model\.onnx$/
  t = performance.now(); const m2 = b.filter((n) => plain.test(n)); const t4 = performance.now() - t
  t = performance.now(); b.sort(); const t5 = performance.now() - t
  console.log("readdirSync", t1.toFixed(1), "promises.readdir", t2.toFixed(1), "compiled test", t3.toFixed(1), "plain test", t4.toFixed(1), "sort", t5.toFixed(1))
}
