// Independent reference for the chat template tests: renders a template with @huggingface/jinja (the JavaScript Jinja
// interpreter transformers.js uses; it shares no code with this repository).
// Usage: node reference-render.js JINJA_INDEX_CJS < input.json
// input.json: {"template": "...", "contexts": [{...variables...}, ...]}, each context holding messages,
// add_generation_prompt, tools, the special tokens and any extra variables, exactly as the template sees them.
// Prints one JSON object: {"parse_error": null or "message", "results": [{"text": "..."} or {"error": "message"}, ...]}.
"use strict";
const fs = require("fs");
const path = require("path");
const { Template } = require(path.resolve(process.argv[2]));
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const output = { parse_error: null, results: [] };
let template = null;
try {
  template = new Template(input.template);
} catch (e) {
  output.parse_error = String(e && e.message !== undefined ? e.message : e);
}
if (template !== null) {
  for (const context of input.contexts) {
    try {
      output.results.push({ text: template.render(context) });
    } catch (e) {
      output.results.push({ error: String(e && e.message !== undefined ? e.message : e) });
    }
  }
}
process.stdout.write(JSON.stringify(output));
