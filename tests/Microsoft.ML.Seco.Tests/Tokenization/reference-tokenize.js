// Independent reference for the tokenizer tests: encodes texts with @lenml/tokenizers (a fork of transformers.js's
// tokenizers, written in JavaScript, sharing no code with Microsoft.ML.Tokenizers or this repository).
// Usage: node reference-tokenize.js LENML_MAIN_JS MODEL_DIR < texts.json   (a JSON array of strings)
// Prints one JSON object: {"ids": [[...]], "ids_plain": [[...]], "tokens_plain": [[...]], "decoded_plain": [...]},
// "plain" meaning add_special_tokens false; decoding keeps special tokens and does no clean-up of spaces.
"use strict";
const fs = require("fs");
const path = require("path");
const [mainJs, modelDir] = process.argv.slice(2);
const { TokenizerLoader } = require(path.resolve(mainJs));
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer_config.json"), "utf8")),
});
const texts = JSON.parse(fs.readFileSync(0, "utf8"));
const result = { ids: [], ids_plain: [], tokens_plain: [], decoded_plain: [] };
for (const text of texts) {
  result.ids.push(tokenizer.encode(text));
  const plain = tokenizer.encode(text, { add_special_tokens: false });
  result.ids_plain.push(plain);
  result.tokens_plain.push(tokenizer.model.convert_ids_to_tokens(plain));
  // The library refuses to decode an empty list; its text is "".
  result.decoded_plain.push(plain.length === 0 ? "" : tokenizer.decode(plain, { skip_special_tokens: false, clean_up_tokenization_spaces: false }));
}
process.stdout.write(JSON.stringify(result));
