// Writes the demo's bundled model, examples/model/mlp.onnx (run: npm run make-model).
import * as fs from "node:fs"
import * as path from "node:path"
import { demoMlp, toOnnx } from "./onnx.js"

const file = path.join(import.meta.dirname, "model", "mlp.onnx")
fs.mkdirSync(path.dirname(file), { recursive: true })
fs.writeFileSync(file, toOnnx(demoMlp()))
console.log(`wrote ${file} (${fs.statSync(file).size} bytes)`)
