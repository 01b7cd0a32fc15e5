// Tests share TorchSharp's global state (default dtype, threads, random generator): run them one at a time.
[assembly: DoNotParallelize]
