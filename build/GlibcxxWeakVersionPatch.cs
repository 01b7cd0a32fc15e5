// Build-time fix-up for TorchSharp's libLibTorchSharp.so on Linux hosts with an older libstdc++ (Debian 12).
//
// TorchSharp 0.107.0 was linked with GCC 13, whose <iostream> references the marker symbol
// _ZSt21ios_base_library_initv under version GLIBCXX_3.4.32. Debian 12's libstdc++ stops at GLIBCXX_3.4.30, so
// the dynamic loader refuses the library and the first torch.* call throws TypeInitializationException. The marker
// is never called, so marking that version requirement weak (VER_FLG_WEAK in .gnu.version_r) lets glibc load it.
//
// This file is compiled twice: by MSBuild's RoslynCodeTaskFactory (Microsoft.ML.Seco.targets beside it, which the
// repository imports and the NuGet package carries in buildTransitive/) as the task, and by the test project (with
// SECO_ELF_ONLY defined) so that tests can check the patched output with the same reader.
#nullable enable
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;

/// <summary>Reads and edits the version requirements (.gnu.version_r) of a little-endian ELF64 shared library.</summary>
public static class ElfVersionNeeds
{
    const uint ShtDynSym = 11;
    const uint ShtGnuVerDef = 0x6ffffffd;
    const uint ShtGnuVerNeed = 0x6ffffffe;
    const uint ShtGnuVerSym = 0x6fffffff;
    /// <summary>The vna_flags bit that tells glibc a missing version is not fatal.</summary>
    public const ushort VerFlagWeak = 0x2;

    /// <summary>One Vernaux entry: a version that the library needs from one of its dependencies.</summary>
    // Plain classes, not records: MSBuild's task factory compiles this file against netstandard2.0.
    public sealed class Requirement
    {
        internal Requirement(string file, string version, ushort flags, ushort index, long flagsOffset)
        {
            File = file; Version = version; Flags = flags; Index = index; FlagsOffset = flagsOffset;
        }
        /// <summary>The dependency (e.g. libstdc++.so.6).</summary>
        public string File { get; }
        /// <summary>The version name (e.g. GLIBCXX_3.4.32).</summary>
        public string Version { get; }
        /// <summary>vna_flags.</summary>
        public ushort Flags { get; }
        /// <summary>vna_other: the index that .gnu.version uses for this version.</summary>
        public ushort Index { get; }
        /// <summary>File offset of vna_flags.</summary>
        public long FlagsOffset { get; }
        /// <summary>True when the requirement is marked weak.</summary>
        public bool IsWeak => (Flags & VerFlagWeak) != 0;
    }

    sealed class Section
    {
        public Section(uint type, long offset, long size, uint link, uint info)
        {
            Type = type; Offset = offset; Size = size; Link = link; Info = info;
        }
        public uint Type { get; }
        public long Offset { get; }
        public long Size { get; }
        public uint Link { get; }
        public uint Info { get; }
    }

    static List<Section> Sections(byte[] elf, string path)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException($"{path} is not an ELF file.");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException($"{path} is not a little-endian 64-bit ELF file.");
        long shoff = (long)BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        if (shentsize != 64 || shoff <= 0 || shoff + (long)shnum * 64 > elf.Length)
            throw new InvalidDataException($"{path} has a section header table this reader does not understand.");
        var sections = new List<Section>(shnum);
        for (int i = 0; i < shnum; i++)
        {
            int h = checked((int)(shoff + i * 64L));
            var s = new Section(
                BitConverter.ToUInt32(elf, h + 4), (long)BitConverter.ToUInt64(elf, h + 0x18),
                (long)BitConverter.ToUInt64(elf, h + 0x20), BitConverter.ToUInt32(elf, h + 0x28),
                BitConverter.ToUInt32(elf, h + 0x2C));
            if (s.Type != 8 /* NOBITS */ && s.Offset + s.Size > elf.Length)
                throw new InvalidDataException($"{path}: section {i} lies outside the file.");
            sections.Add(s);
        }
        return sections;
    }

    static string CString(byte[] elf, long offset)
    {
        int start = checked((int)offset), end = start;
        while (end < elf.Length && elf[end] != 0) end++;
        return Encoding.ASCII.GetString(elf, start, end - start);
    }

    /// <summary>Every version requirement of the library, in file order.</summary>
    public static List<Requirement> Requirements(byte[] elf, string path)
    {
        var sections = Sections(elf, path);
        var result = new List<Requirement>();
        foreach (var verneed in sections.Where(s => s.Type == ShtGnuVerNeed))
        {
            long strtab = sections[(int)verneed.Link].Offset;
            long entry = verneed.Offset;
            for (uint n = 0; n < verneed.Info; n++)
            {
                ushort count = BitConverter.ToUInt16(elf, (int)entry + 2);
                string file = CString(elf, strtab + BitConverter.ToUInt32(elf, (int)entry + 4));
                long aux = entry + BitConverter.ToUInt32(elf, (int)entry + 8);
                for (int a = 0; a < count; a++)
                {
                    ushort flags = BitConverter.ToUInt16(elf, (int)aux + 4);
                    ushort index = BitConverter.ToUInt16(elf, (int)aux + 6);
                    string version = CString(elf, strtab + BitConverter.ToUInt32(elf, (int)aux + 8));
                    result.Add(new Requirement(file, version, flags, index, aux + 4));
                    aux += BitConverter.ToUInt32(elf, (int)aux + 12);
                }
                uint next = BitConverter.ToUInt32(elf, (int)entry + 12);
                if (next == 0) break;
                entry += next;
            }
        }
        return result;
    }

    /// <summary>The versions a library defines (.gnu.version_d), e.g. GLIBCXX_3.4.30 for libstdc++.</summary>
    public static HashSet<string> Definitions(byte[] elf, string path)
    {
        var sections = Sections(elf, path);
        var result = new HashSet<string>(StringComparer.Ordinal);
        foreach (var verdef in sections.Where(s => s.Type == ShtGnuVerDef))
        {
            long strtab = sections[(int)verdef.Link].Offset;
            long entry = verdef.Offset;
            for (uint n = 0; n < verdef.Info; n++)
            {
                long aux = entry + BitConverter.ToUInt32(elf, (int)entry + 12);
                result.Add(CString(elf, strtab + BitConverter.ToUInt32(elf, (int)aux)));
                uint next = BitConverter.ToUInt32(elf, (int)entry + 16);
                if (next == 0) break;
                entry += next;
            }
        }
        return result;
    }

    /// <summary>Names of the dynamic symbols bound to a version index (from .gnu.version and .dynsym).</summary>
    public static List<string> SymbolsOfVersion(byte[] elf, string path, ushort versionIndex)
    {
        var sections = Sections(elf, path);
        var dynsym = sections.Single(s => s.Type == ShtDynSym);
        var versym = sections.Single(s => s.Type == ShtGnuVerSym);
        long strtab = sections[(int)dynsym.Link].Offset;
        long count = dynsym.Size / 24;
        var names = new List<string>();
        for (long i = 0; i < count; i++)
        {
            ushort v = (ushort)(BitConverter.ToUInt16(elf, (int)(versym.Offset + 2 * i)) & 0x7fff);
            if (v == versionIndex)
                names.Add(CString(elf, strtab + BitConverter.ToUInt32(elf, (int)(dynsym.Offset + 24 * i))));
        }
        return names;
    }

    /// <summary>The host's libstdc++.so.6, or null when none is found in the usual places.</summary>
    public static string? FindHostLibStdCxx()
    {
        string[] candidates =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        };
        return candidates.FirstOrDefault(File.Exists);
    }
}

#if !SECO_ELF_ONLY
/// <summary>
/// Marks libLibTorchSharp.so's GLIBCXX requirements weak when the host libstdc++ lacks them and the only symbols
/// bound to them are GCC's iostream initialisation marker. Fails the build on anything it does not recognise.
/// </summary>
public class GlibcxxWeakVersionPatch : Microsoft.Build.Utilities.Task
{
    /// <summary>Symbols that GCC 13+ references only as link-time markers; safe to leave unresolved.</summary>
    static readonly string[] MarkerSymbols = { "_ZSt21ios_base_library_initv" };

    /// <summary>The build or publish output folder holding TorchSharp's native library.</summary>
    [Microsoft.Build.Framework.Required]
    public string OutputDirectory { get; set; } = "";

    public override bool Execute()
    {
        string[] layouts = { "runtimes/linux-x64/native/libLibTorchSharp.so", "libLibTorchSharp.so" };
        var libraries = layouts.Select(l => Path.Combine(OutputDirectory, l)).Where(File.Exists).ToList();
        if (libraries.Count == 0)
        {
            Log.LogError("Microsoft.ML.Seco native fix-up: libLibTorchSharp.so was not found in '{0}' (looked for {1}). " +
                         "TorchSharp's package layout may have changed; update build/GlibcxxWeakVersionPatch.cs.",
                         OutputDirectory, string.Join(", ", layouts));
            return false;
        }
        string? hostLib = ElfVersionNeeds.FindHostLibStdCxx();
        if (hostLib is null)
        {
            Log.LogWarning("Microsoft.ML.Seco native fix-up: no libstdc++.so.6 found on this host; nothing patched.");
            return true;
        }
        var provided = ElfVersionNeeds.Definitions(File.ReadAllBytes(hostLib), hostLib);
        foreach (var library in libraries)
            if (!Patch(library, provided, hostLib)) return false;
        return !Log.HasLoggedErrors;
    }

    bool Patch(string library, HashSet<string> provided, string hostLib)
    {
        byte[] elf = File.ReadAllBytes(library);
        var missing = ElfVersionNeeds.Requirements(elf, library)
            .Where(r => r.File == "libstdc++.so.6" && !provided.Contains(r.Version)).ToList();
        if (missing.Count == 0)
        {
            Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Low,
                "Microsoft.ML.Seco native fix-up: {0} needs nothing that {1} lacks.", library, hostLib);
            return true;
        }
        bool changed = false;
        foreach (var requirement in missing)
        {
            var symbols = ElfVersionNeeds.SymbolsOfVersion(elf, library, requirement.Index);
            var unsafeSymbols = symbols.Except(MarkerSymbols).ToList();
            if (unsafeSymbols.Count > 0)
            {
                Log.LogError("Microsoft.ML.Seco native fix-up: {0} needs {1}, which {2} does not provide, for symbols " +
                             "that are real calls ({3}). Install a newer libstdc++ (GCC 13+) or use a newer distribution.",
                             library, requirement.Version, hostLib, string.Join(", ", unsafeSymbols));
                return false;
            }
            if (requirement.IsWeak) continue;
            ushort flags = (ushort)(requirement.Flags | ElfVersionNeeds.VerFlagWeak);
            elf[requirement.FlagsOffset] = (byte)flags;
            elf[requirement.FlagsOffset + 1] = (byte)(flags >> 8);
            changed = true;
        }
        if (changed)
        {
            // Write a new file and move it over the old one: the output copy may be a hard link into the NuGet cache,
            // which must never change.
            string temporary = library + ".seco-patch";
            File.WriteAllBytes(temporary, elf);
            File.Delete(library);
            File.Move(temporary, library);
            Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High,
                "Microsoft.ML.Seco native fix-up: marked {0} weak in {1} (host libstdc++ lacks it).",
                string.Join(", ", missing.Select(m => m.Version)), library);
        }
        return true;
    }
}
#endif
