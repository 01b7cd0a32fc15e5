namespace Microsoft.ML.Seco.Chat;

/// <summary>What went wrong in a chat template.</summary>
public enum ChatTemplateErrorKind
{
    /// <summary>The template's source is not valid (found when it is parsed).</summary>
    Syntax,

    /// <summary>Rendering failed: an undefined operation, an unknown filter or test, a wrong argument.</summary>
    Runtime,

    /// <summary>The template called <c>raise_exception(message)</c>, typically to reject the conversation.</summary>
    Raised,
}
