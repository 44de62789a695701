// Builds index.js into the WebAssembly component dist/{{crate}}.wasm for the WIT world
// weir:function/handler in wit/, with componentize-js (`npm run build`).
import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const output = here("./dist/{{crate}}.wasm");

const { component } = await componentize({
  sourcePath: here("./index.js"),
  witPath: here("./wit"),
  worldName: "weir:function/handler",
  // weir calls `handle`, never wasi:http/incoming-handler.
  disableFeatures: ["fetch-event"],
});
await mkdir(here("./dist"), { recursive: true });
await writeFile(output, component);
console.log(`built ${output} (${component.length} bytes)`);
