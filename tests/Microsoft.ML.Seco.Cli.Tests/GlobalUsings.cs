global using Microsoft.VisualStudio.TestTools.UnitTesting;
global using System.Globalization;
global using System.Reflection;
global using System.Text.Json;
global using System.Text.Json.Nodes;
