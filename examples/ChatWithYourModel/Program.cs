// ChatWithYourModel: fine-tune a chat model on conversations (a messages column) through an ML.NET pipeline, with the
// loss on the assistant's turns, then talk to it through Microsoft.Extensions.AI's IChatClient. With no arguments it
// writes a random tiny model with a ChatML chat template (no downloads) and synthetic conversations.
using Microsoft.ML.Seco.Examples.ChatWithYourModel;

return await ChatRun.RunAsync(args, Console.Out);
