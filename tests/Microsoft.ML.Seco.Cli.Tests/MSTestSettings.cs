// The CLI tests share TorchSharp's global state (threads, random generator) and temporary model folders: run them one at a time.
[assembly: DoNotParallelize]
