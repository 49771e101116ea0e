#include "engine/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "engine/cli.h"
#include "engine/device.h"
#include "engine/error.h"
#include "tests/expect_error.h"
#include "tests/shared_data.h"

namespace engine {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::error_of;
using testing::scratch_path;
namespace fs = std::filesystem;

const char* kText = R"(# model settings
name = tiny   # keys before any section belong to section ""
; a whole-line comment

[model]
layers = 4
width=256
dropout = 0.1   # trailing comment
activation = gelu
url = http://host/#frag

  [train]
lr = 1e-3
steps = -20
shuffle = Yes
sizes = 8, 16,, 32 ,
tags = a , b
empty =
)";

TEST(Config, ParsesSectionsAndTypedValues) {
  const Config c = Config::parse(kText, "cfg.ini");
  EXPECT_EQ(c.source(), "cfg.ini");
  EXPECT_EQ(c.get_string("", "name"), "tiny");
  EXPECT_EQ(c.get_int("model", "layers"), 4);
  EXPECT_EQ(c.get_int("model", "width", 0), 256);
  EXPECT_DOUBLE_EQ(c.get_double("model", "dropout"), 0.1);
  EXPECT_EQ(c.get_string("model", "url"), "http://host/#frag");  // '#' not after space
  EXPECT_DOUBLE_EQ(c.get_double("train", "lr"), 1e-3);
  EXPECT_EQ(c.get_int("train", "steps"), -20);
  EXPECT_TRUE(c.get_bool("train", "shuffle"));
  EXPECT_EQ(c.get_string("train", "empty", "x"), "");
  EXPECT_EQ(c.get_choice("model", "activation", "relu", {"relu", "gelu"}), "gelu");
  EXPECT_THAT(c.get_int_list("train", "sizes", {}), ElementsAre(8, 16, 32));
  EXPECT_THAT(c.get_list("train", "tags", {}), ElementsAre("a", "b"));
  EXPECT_NO_THROW(c.check_all_used());
}

TEST(Config, DefaultsApplyOnlyWhenKeyIsAbsent) {
  const Config c = Config::parse("[a]\nx = 5\n");
  EXPECT_EQ(c.get_int("a", "x", 9), 5);
  EXPECT_EQ(c.get_int("a", "y", 9), 9);
  EXPECT_EQ(c.get_int("nosection", "x", 7), 7);
  EXPECT_DOUBLE_EQ(c.get_double("a", "y", 2.5), 2.5);
  EXPECT_EQ(c.get_string("a", "y", "def"), "def");
  EXPECT_TRUE(c.get_bool("a", "y", true));
  EXPECT_FALSE(c.get_bool("a", "y", false));
  EXPECT_EQ(c.get_choice("a", "y", "sgd", {"sgd", "adam"}), "sgd");
  EXPECT_THAT(c.get_list("a", "y", {"p", "q"}), ElementsAre("p", "q"));
  EXPECT_THAT(c.get_int_list("a", "y", {1, 2}), ElementsAre(1, 2));
  EXPECT_THAT(c.get_double_list("a", "y", {0.5}), ElementsAre(0.5));
  EXPECT_TRUE(c.has("a", "x"));
  EXPECT_FALSE(c.has("a", "y"));
}

TEST(Config, BoolSpellingsAreCaseInsensitive) {
  const Config c = Config::parse(
      "t1=true\nt2=YES\nt3=On\nt4=1\nf1=False\nf2=no\nf3=OFF\nf4=0\n");
  for (const char* key : {"t1", "t2", "t3", "t4"}) EXPECT_TRUE(c.get_bool("", key)) << key;
  for (const char* key : {"f1", "f2", "f3", "f4"}) EXPECT_FALSE(c.get_bool("", key, true)) << key;
}

TEST(Config, CommentsAndBlankLinesAreIgnored) {
  const Config c = Config::parse("\n  # a\n; b\n  ; c = 1\n[ s ] # header comment\nk = v # note\n\n");
  EXPECT_EQ(c.get_string("s", "k"), "v");
  EXPECT_NO_THROW(c.check_all_used());  // nothing else was parsed as a key
}

// ';' separates list items ([experiment] groups, teachers): after a value it
// is content, so no item can vanish as a comment; only '#' comments there.
TEST(Config, SemicolonAfterAValueIsKept) {
  const Config c = Config::parse("[e]\ngroups = 0 ; 99\nteachers = a:x ;b:y # two\nurl = http://h/#frag\n");
  EXPECT_EQ(c.get_string("e", "groups"), "0 ; 99");
  EXPECT_EQ(c.get_string("e", "teachers"), "a:x ;b:y");
  EXPECT_EQ(c.get_string("e", "url"), "http://h/#frag");
}

TEST(Config, BadIntegerNamesLineKeyValueAndType) {
  const Config c = Config::parse("[train]\nsteps = 12x\nbig = 99999999999999999999\nf = 1.5\n",
                                 "config.ini");
  EXPECT_THAT(error_of([&] { c.get_int("train", "steps"); }),
              AllOf(HasSubstr("config.ini:2:"), HasSubstr("[train] steps = '12x'"),
                    HasSubstr("expected int")));
  EXPECT_THAT(error_of([&] { c.get_int("train", "big", 0); }),
              AllOf(HasSubstr("config.ini:3:"), HasSubstr("out of range")));
  EXPECT_THAT(error_of([&] { c.get_int("train", "f", 0); }), HasSubstr("'1.5' is not an integer"));
}

TEST(Config, BadFloatNamesLineKeyValueAndType) {
  const Config c =
      Config::parse("[train]\nlr = abc\nv = 1.2.3\nn = nan\nh = 1e999\ni = -inf\n", "config.ini");
  EXPECT_EQ(error_of([&] { c.get_double("train", "lr"); }),
            "config.ini:2: [train] lr = 'abc' is not a number (expected float)");
  EXPECT_THAT(error_of([&] { c.get_double("train", "v", 0); }),
              AllOf(HasSubstr("config.ini:3:"), HasSubstr("'1.2.3'"), HasSubstr("expected float")));
  EXPECT_THAT(error_of([&] { c.get_double("train", "n", 0); }), HasSubstr("'nan' is not a finite"));
  EXPECT_THAT(error_of([&] { c.get_double("train", "i", 0); }), HasSubstr("'-inf' is not a finite"));
  EXPECT_THAT(error_of([&] { c.get_double("train", "h", 0); }), HasSubstr("out of range"));
}

TEST(Config, RangeCheckedGettersNameTheLineKeyValueAndRange) {
  Config c = Config::parse("[train]\nbatch = 0\nlr = -0.5\nwarmup = 1.0\nok = 3\nstart = 0.0\n", "r.ini");
  EXPECT_EQ(c.get_int_at_least("train", "ok", 1, 1), 3);
  EXPECT_EQ(c.get_int_at_least("train", "ok", 1, 3), 3);  // the bounds that are included
  EXPECT_EQ(c.get_double_in("train", "start", 0.5, 0.0, 1.0), 0.0);
  EXPECT_EQ(c.get_int_at_least("train", "absent", 7, 1), 7);  // a default is not checked
  EXPECT_EQ(error_of([&] { c.get_int_at_least("train", "batch", 1, 1); }),
            "r.ini:2: [train] batch = '0' must be >= 1");
  EXPECT_EQ(error_of([&] { c.get_double_above("train", "lr", 1e-3, 0.0); }),
            "r.ini:3: [train] lr = '-0.5' must be > 0");
  EXPECT_EQ(error_of([&] { c.get_double_in("train", "warmup", 0.0, 0.0, 1.0); }),
            "r.ini:4: [train] warmup = '1.0' must be in [0, 1)");
  c.apply_override("train.lr=0");
  EXPECT_EQ(error_of([&] { c.get_double_above("train", "lr", 1e-3, 0.0); }),
            "<override>: [train] lr = '0' must be > 0");
}

TEST(Config, AByteOrderMarkIsNotPartOfTheFirstLine) {
  Config c = Config::parse("\xEF\xBB\xBF[run]\ndevice = cpu\n", "bom.ini");
  EXPECT_EQ(c.get_string("run", "device"), "cpu");
}

TEST(Config, BadBoolAndBadChoiceExplainWhatIsAllowed) {
  const Config c = Config::parse("[o]\nflag = maybe\nopt = adamw\n", "config.ini");
  EXPECT_THAT(error_of([&] { c.get_bool("o", "flag", false); }),
              AllOf(HasSubstr("config.ini:2: [o] flag = 'maybe'"), HasSubstr("yes/no")));
  EXPECT_THAT(error_of([&] { c.get_choice("o", "opt", "sgd", {"sgd", "adam"}); }),
              AllOf(HasSubstr("config.ini:3: [o] opt = 'adamw'"), HasSubstr("one of: sgd, adam"),
                    HasSubstr("did you mean 'adam'?")));
}

TEST(Config, BadIntListItemIsNamed) {
  const Config c = Config::parse("[m]\ndims = 1, two, 3\n", "config.ini");
  EXPECT_THAT(error_of([&] { c.get_int_list("m", "dims", {}); }),
              AllOf(HasSubstr("config.ini:2: [m] dims = '1, two, 3'"), HasSubstr("item 'two'")));
}

TEST(Config, DoubleListParsesItemsAndNamesABadOne) {
  const Config c = Config::parse("[d]\nmean = 0.5, 1e-2,2\nstd = 0.1, nan\n", "config.ini");
  EXPECT_THAT(c.get_double_list("d", "mean", {}), ElementsAre(0.5, 0.01, 2.0));
  EXPECT_THAT(error_of([&] { c.get_double_list("d", "std", {}); }),
              AllOf(HasSubstr("config.ini:3: [d] std = '0.1, nan'"), HasSubstr("item 'nan'")));
}

TEST(Config, MissingRequiredKeyNamesSectionKeyAndFile) {
  const Config c = Config::parse("[train]\n", "config.ini");
  EXPECT_EQ(error_of([&] { c.get_string("train", "data"); }),
            "missing key [train] data in config.ini");
  EXPECT_THAT(error_of([&] { c.get_int("train", "steps"); }), HasSubstr("[train] steps"));
  EXPECT_THAT(error_of([&] { c.get_double("train", "lr"); }), HasSubstr("[train] lr"));
  EXPECT_THAT(error_of([&] { c.get_bool("train", "fp16"); }), HasSubstr("[train] fp16"));
  EXPECT_EQ(error_of([&] { c.get_string("eval", "data"); }), "missing key [eval] data in config.ini");
}

TEST(Config, MissingRequiredKeyPointsAtAnUnreadNearMiss) {
  Config c = Config::parse("[teacher]\nmodle = m\nconfig = c.json\n[data]\npth = d\n", "config.ini");
  EXPECT_EQ(error_of([&] { c.get_string("teacher", "model"); }),
            "missing key [teacher] model in config.ini (is 'modle' at config.ini:2 a typo?)");
  c.apply_override("data.pth=e");
  EXPECT_EQ(error_of([&] { c.get_string("data", "path"); }),
            "missing key [data] path in config.ini (is 'pth' at <override> a typo?)");
  // A key that a getter read is not a typo; nor is a key far from the name.
  c.get_string("data", "pth", "");
  EXPECT_EQ(error_of([&] { c.get_string("data", "path"); }), "missing key [data] path in config.ini");
  EXPECT_EQ(error_of([&] { c.fail_missing("teacher", "weights"); }), "missing key [teacher] weights in config.ini");
}

// A required key of a section the file lacks: the near miss is the section's name.
TEST(Config, MissingRequiredKeyPointsAtAnUnreadNearMissSection) {
  Config c = Config::parse("[data]\npath = d\n[tacher]\nmodel = m\n", "config.ini");
  c.get_string("data", "path");
  EXPECT_EQ(error_of([&] { c.get_string("teacher", "model"); }),
            "missing key [teacher] model in config.ini (is [tacher] at config.ini:3 a typo?)");
  // A section that a getter read is not a typo; nor is a section far from the name.
  EXPECT_EQ(error_of([&] { c.get_string("dat", "path"); }), "missing key [dat] path in config.ini");
  EXPECT_EQ(error_of([&] { c.get_string("output", "dir"); }), "missing key [output] dir in config.ini");
}

TEST(Config, MalformedLinesAreRejectedWithLineAndText) {
  EXPECT_THAT(error_of([] { Config::parse("[a]\nx = 1\njust words\n", "config.ini"); }),
              AllOf(HasSubstr("config.ini:3:"), HasSubstr("'just words'")));
  EXPECT_THAT(error_of([] { Config::parse("[unclosed\n", "config.ini"); }),
              HasSubstr("config.ini:1: malformed line '[unclosed'"));
  EXPECT_THAT(error_of([] { Config::parse("[]\n", "c"); }), HasSubstr("c:1: malformed"));
  EXPECT_THAT(error_of([] { Config::parse("= 3\n", "c"); }), HasSubstr("c:1: malformed"));
  EXPECT_THAT(error_of([] { Config::parse("two words = 3\n", "c"); }), HasSubstr("c:1: malformed"));
  EXPECT_THAT(error_of([] { Config::parse("[a.b]\n", "c"); }), HasSubstr("c:1: malformed"));
  EXPECT_THAT(error_of([] { Config::parse("[a=b]\n", "c"); }), HasSubstr("c:1: malformed"));
  EXPECT_THAT(error_of([] { Config::parse("[[a]]\n", "c"); }), HasSubstr("c:1: malformed"));
  EXPECT_THAT(error_of([] { Config::parse("[a]\nx[0] = 1\n", "c"); }), HasSubstr("c:2: malformed"));
}

TEST(Config, DuplicateKeyNamesBothLines) {
  const std::string text = "[t]\nlr = 1\n[m]\nlr = 2\n[t]\nlr = 3\n";
  EXPECT_THAT(error_of([&] { Config::parse(text, "config.ini"); }),
              AllOf(HasSubstr("config.ini:6: duplicate key 'lr' in [t]"), HasSubstr("line 2")));
}

TEST(Config, UnknownKeySuggestsNearestAskedName) {
  const Config c =
      Config::parse("[train]\nzzz = 1\nlearning_rat = 0.1\nsteps = 3\n", "config.ini");
  c.get_double("train", "learning_rate", 0.01);
  c.get_int("train", "steps", 0);
  const std::string msg = error_of([&] { c.check_all_used(); });
  EXPECT_THAT(msg, HasSubstr("config.ini:3: unknown key 'learning_rat' in [train]; "
                             "did you mean 'learning_rate'?"));
  EXPECT_THAT(msg, HasSubstr("config.ini:2: unknown key 'zzz' in [train]"));
  EXPECT_LT(msg.find("'zzz'"), msg.find("'learning_rat'"));  // reported in file order
  EXPECT_THAT(msg, Not(HasSubstr("'zzz' in [train]; did you mean")));
  EXPECT_THAT(msg, Not(HasSubstr("'steps'")));
}

TEST(Config, UnknownSectionSuggestsNearestAskedSection) {
  const Config c = Config::parse("[trian]\nlr = 1\n[model]\nw = 2\n", "config.ini");
  c.get_double("train", "lr", 0.1);
  c.get_int("model", "w", 0);
  EXPECT_EQ(error_of([&] { c.check_all_used(); }),
            "config.ini:1: unknown section [trian]; did you mean [train]?");
  // A section opened again is reported at its first header.
  const Config reopened = Config::parse("[trian]\nlr = 1\n[model]\nw = 2\n[trian]\nwd = 0\n", "config.ini");
  reopened.get_int("model", "w", 0);
  EXPECT_EQ(error_of([&] { reopened.check_all_used(); }), "config.ini:1: unknown section [trian]");
}

TEST(Config, RootKeysAreCheckedToo) {
  const Config c = Config::parse("seed = 1\n[a]\n", "config.ini");
  c.has("a", "x");
  EXPECT_THAT(error_of([&] { c.check_all_used(); }),
              HasSubstr("config.ini:1: unknown key 'seed' in []"));
}

TEST(Config, SetFlagSplitsAssignmentsButKeepsListValuesWhole) {
  EXPECT_EQ(split_overrides("a.b=1,c.d=x"), (std::vector<std::string>{"a.b=1", "c.d=x"}));
  EXPECT_EQ(split_overrides("distill.seeds=0,1, 2,run.device=cuda,.seed=3"),
            (std::vector<std::string>{"distill.seeds=0,1, 2", "run.device=cuda", ".seed=3"}));
  EXPECT_EQ(split_overrides(",eval.latency_batches=1,256,"), (std::vector<std::string>{"eval.latency_batches=1,256"}));
  // A value with '=' in it is still a value: only "section.key=" starts an assignment.
  EXPECT_EQ(split_overrides("data.path=a=b,x=y"), (std::vector<std::string>{"data.path=a=b,x=y"}));
  // Blanks after the comma, and '-' in names (config names may hold one), still start one.
  EXPECT_EQ(split_overrides("a.b=1, c.d=2,my-run.num-workers=3"),
            (std::vector<std::string>{"a.b=1", " c.d=2", "my-run.num-workers=3"}));
  Config c = Config::parse("[eval]\nlatency_batches = 1\n", "config.ini");
  for (const std::string& assignment : split_overrides("eval.latency_batches=1,64,256")) c.apply_override(assignment);
  EXPECT_EQ(c.get_int_list("eval", "latency_batches", {}), (std::vector<int64_t>{1, 64, 256}));
}

TEST(Config, WhereNamesTheLineTheOverrideOrTheFile) {
  Config c = Config::parse("[train]\nlr = 0.1\nsteps = 3\n", "config.ini");
  c.apply_override("train.steps=4");
  EXPECT_EQ(c.where("train", "lr"), "config.ini:2");
  EXPECT_EQ(c.where("train", "steps"), "<override>");
  EXPECT_EQ(c.where("train", "epochs"), "config.ini");  // not set: its default applies
  EXPECT_EQ(c.where("eval", "lr"), "config.ini");
  // where() is not a read: an unread section is still reported.
  EXPECT_THAT(error_of([&] { c.check_all_used(); }), HasSubstr("unknown section [train]"));
}

TEST(Config, OverridesReplaceOrAddValuesAndAreReportedAsOverride) {
  Config c = Config::parse("[train]\nlr = 0.1\n", "config.ini");
  c.apply_override("train.lr=0.5");
  c.apply_override(" model.act = relu ");
  c.apply_override(".seed=7");
  c.set("train", "steps", "abc");
  EXPECT_DOUBLE_EQ(c.get_double("train", "lr"), 0.5);
  EXPECT_EQ(c.get_string("model", "act"), "relu");
  EXPECT_EQ(c.get_int("", "seed"), 7);
  EXPECT_EQ(error_of([&] { c.get_int("train", "steps"); }),
            "<override>: [train] steps = 'abc' is not an integer (expected int)");
  c.apply_override("trian.x=1");
  EXPECT_EQ(error_of([&] { c.check_all_used(); }),
            "<override>: unknown section [trian]; did you mean [train]?");
}

TEST(Config, OverrideSyntaxErrors) {
  Config c = Config::parse("");
  for (const char* bad : {"lr=0.1", "train.lr", "train.=1", "=1", "train lr.x=1", "a.b c=1"}) {
    EXPECT_THAT(error_of([&] { c.apply_override(bad); }),
                HasSubstr(std::string("bad override '") + bad + "'"))
        << bad;
  }
}

TEST(Config, LoadReadsFileAndNamesItInErrors) {
  const std::string path = ::testing::TempDir() + "test_config_load.ini";
  std::ofstream(path) << "[a]\nx = 3\ny = oops\n";
  const Config c = Config::load(path);
  EXPECT_EQ(c.source(), path);
  EXPECT_EQ(c.get_int("a", "x"), 3);
  EXPECT_THAT(error_of([&] { c.get_int("a", "y"); }), HasSubstr(path + ":3: [a] y = 'oops'"));
  std::remove(path.c_str());
}

TEST(Config, LoadMissingFileNamesPath) {
  const std::string path = ::testing::TempDir() + "no/such/config.ini";
  EXPECT_THAT(error_of([&] { Config::load(path); }),
              AllOf(HasSubstr("'" + path + "'"), HasSubstr("No such file")));
  EXPECT_THAT(error_of([] { Config::load(::testing::TempDir()); }), HasSubstr("is a directory"));
}

TEST(NearestName, SuggestsOnlyPlausibleTypos) {
  EXPECT_EQ(nearest_name("trian", {"model", "train"}), "train");
  EXPECT_EQ(nearest_name("learning_rat", {"lr", "learning_rate"}), "learning_rate");
  EXPECT_EQ(nearest_name("lx", {"lr"}), "lr");
  EXPECT_EQ(nearest_name("lr", {"bs"}), "");  // two edits replace the whole word
  EXPECT_EQ(nearest_name("optimizer", {"scheduler"}), "");
  EXPECT_EQ(nearest_name("num_workers", {"workers"}), "");  // 4 edits; 11 letters allow 3
  EXPECT_EQ(nearest_name("", {"a"}), "");
  EXPECT_EQ(nearest_name("abc", {}), "");
}

TEST(Flags, OnlyAVariadicLastPositionalTakesExtraArguments) {
  char tool[] = "tool", config[] = "a.ini", first[] = "train.lr=1", second[] = "run.device=cpu";
  char* argv[] = {tool, config, first, second};
  Flags variadic("tool CONFIG [OVERRIDES...]", {}, {"CONFIG", "OVERRIDES..."});
  ASSERT_TRUE(variadic.parse(4, argv));
  EXPECT_THAT(variadic.positional(), ElementsAre("a.ini", "train.lr=1", "run.device=cpu"));
  Flags fixed("tool CONFIG", {}, {"CONFIG"});
  EXPECT_THAT(error_of([&] { fixed.parse(4, argv); }), HasSubstr("unexpected argument 'train.lr=1'"));
}

TEST(Flags, IntListsParseEachItemAndNameTheFlagOnError) {
  char tool[] = "tool", good[] = "--blocks= 2, 3 ,11", bad[] = "--blocks=2,3x";
  const std::vector<FlagSpec> specs = {{"blocks", "a list", ""}};
  Flags flags("tool", specs);
  char* with_good[] = {tool, good};
  ASSERT_TRUE(flags.parse(2, with_good));
  EXPECT_THAT(flags.get_int_list("blocks"), ElementsAre(2, 3, 11));
  Flags none("tool", specs);
  char* empty[] = {tool};
  ASSERT_TRUE(none.parse(1, empty));
  EXPECT_TRUE(none.get_int_list("blocks").empty());
  Flags wrong("tool", specs);
  char* with_bad[] = {tool, bad};
  ASSERT_TRUE(wrong.parse(2, with_bad));
  EXPECT_EQ(error_of([&] { wrong.get_int_list("blocks"); }), "flag --blocks: '3x' is not an integer");
}

TEST(Flags, IntAtLeastNamesTheFlagAndTheValueBelowTheMinimum) {
  char tool[] = "tool", repeats[] = "--repeats=0", limit[] = "--limit=-5";
  Flags flags("tool", {{"repeats", "calls", "20"}, {"limit", "images", "0"}});
  char* argv[] = {tool, repeats, limit};
  ASSERT_TRUE(flags.parse(3, argv));
  EXPECT_EQ(error_of([&] { flags.get_int_at_least("repeats", 1); }), "flag --repeats: 0 must be >= 1");
  EXPECT_EQ(error_of([&] { flags.get_int_at_least("limit", 0); }), "flag --limit: -5 must be >= 0");
  Flags defaults("tool", {{"repeats", "calls", "20"}});
  ASSERT_TRUE(defaults.parse(1, argv));
  EXPECT_EQ(defaults.get_int_at_least("repeats", 1), 20);
  EXPECT_EQ(defaults.get_int_at_least("repeats", 20), 20);  // the minimum itself is allowed
}

TEST(Flags, SwitchesTakeTheBooleansThatConfigKeysTake) {
  char tool[] = "tool", upper[] = "--skip=True", off[] = "--keep=off", bad[] = "--strict=maybe";
  Flags flags("tool", {{"skip", "", "", true}, {"keep", "", "", true}, {"strict", "", "", true}});
  char* argv[] = {tool, upper, off, bad};
  ASSERT_TRUE(flags.parse(4, argv));
  EXPECT_TRUE(flags.get_bool("skip"));
  EXPECT_FALSE(flags.get_bool("keep"));
  EXPECT_EQ(error_of([&] { flags.get_bool("strict"); }),
            "flag --strict: 'maybe' is not a boolean (expected true/false, yes/no, on/off or 1/0)");
}

TEST(Flags, RepeatedSetAccumulatesItsAssignments) {
  char tool[] = "tool", set[] = "--set", typo[] = "distill.lrr=0.1", dir[] = "--set=output.dir=x,eval.batches=1,2";
  char* argv[] = {tool, set, typo, dir};
  Flags flags("tool", {config_override_flag("a.b=1")});
  ASSERT_TRUE(flags.parse(4, argv));
  EXPECT_THAT(split_overrides(flags.get("set")), ElementsAre("distill.lrr=0.1", "output.dir=x", "eval.batches=1,2"));
  Config config = Config::parse("[output]\ndir = y\n");
  apply_config_overrides(flags, config);
  EXPECT_EQ(config.get_string("output", "dir", ""), "x");
  EXPECT_EQ(config.get_int_list("eval", "batches", {}), (std::vector<int64_t>{1, 2}));
  // A --set of its own is never the rest of the previous one's list: "--set
  // output.dir=y --set 2" used to set dir to "y,2".
  char dir_y[] = "output.dir=y", two[] = "2";
  char* stray[] = {tool, set, dir_y, set, two};
  Flags strayed("tool", {config_override_flag("a.b=1")});
  ASSERT_TRUE(strayed.parse(5, stray));
  testing::expect_error_mentioning([&] { apply_config_overrides(strayed, config); }, {"'2'"});
}

TEST(Flags, AnUnknownFlagSuggestsTheNearestKnownOne) {
  char tool[] = "tool", typo[] = "--ouptut=x", unknown[] = "--zzz";
  Flags flags("tool", {{"output", "results file", ""}, {"device", "where to run", "cpu"}});
  char* with_typo[] = {tool, typo};
  EXPECT_EQ(error_of([&] { flags.parse(2, with_typo); }), "unknown flag --ouptut; did you mean --output?");
  char* with_unknown[] = {tool, unknown};
  EXPECT_EQ(error_of([&] { flags.parse(2, with_unknown); }), "unknown flag --zzz (see --help)");
  EXPECT_EQ(error_of([&] { flags.occurrences("devic"); }), "unknown flag --devic; did you mean --device?");
}

TEST(Flags, AFlagWithoutItsValueIsAnError) {
  char tool[] = "tool", out[] = "--out";
  char* argv[] = {tool, out, nullptr};
  Flags flags("tool", {{"out", "results file", ""}});
  EXPECT_EQ(error_of([&] { flags.parse(2, argv); }), "flag --out needs a value");
}

TEST(Flags, AFlagNotGivenHasItsDefaultAndASwitchIsOff) {
  char tool[] = "tool";
  char* argv[] = {tool};
  Flags flags("tool", {{"out", "results file", ""}, {"device", "where to run", "cpu"}, {"verbose", "talk", "", true}});
  ASSERT_TRUE(flags.parse(1, argv));
  EXPECT_FALSE(flags.has("out"));
  EXPECT_EQ(flags.get("out"), "");
  EXPECT_TRUE(flags.has("device"));
  EXPECT_EQ(flags.get("device"), "cpu");
  EXPECT_FALSE(flags.has("verbose"));
  EXPECT_FALSE(flags.get_bool("verbose"));
}

TEST(Flags, HelpListsEveryFlagWithItsValueDefaultAndRepetition) {
  Flags flags("tool [options] MODEL",
              {{"out", "results file", ""}, {"device", "where to run", "cpu"}, {"verbose", "talk", "", true},
               config_override_flag("a.b=1")},
              {"MODEL"});
  const std::string help =
      "usage: tool [options] MODEL\n"
      "  --out X            results file\n"
      "  --device X         where to run (default cpu)\n"
      "  --verbose          talk\n"
      "  --set X            override config values: --set a.b=1 (repeatable)\n";
  EXPECT_EQ(flags.help_text(), help);
  char tool[] = "tool", short_help[] = "-h";
  char* argv[] = {tool, short_help, nullptr};
  ::testing::internal::CaptureStdout();
  EXPECT_FALSE(flags.parse(2, argv));
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), help);
}

TEST(Flags, AnyOtherFlagGivenTwiceIsAnErrorNamingIt) {
  char tool[] = "tool", first[] = "--out=a.json", flag[] = "--out", second[] = "b.json", verbose[] = "--verbose";
  char* values[] = {tool, first, flag, second};
  Flags flags("tool", {{"out", "results file", ""}, {"verbose", "talk", "", /*is_switch=*/true}});
  EXPECT_EQ(error_of([&] { flags.parse(4, values); }),
            "flag --out given twice ('a.json', then 'b.json'); give it once");
  char* switches[] = {tool, verbose, verbose};
  Flags again("tool", {{"verbose", "talk", "", /*is_switch=*/true}});
  EXPECT_THAT(error_of([&] { again.parse(3, switches); }), HasSubstr("flag --verbose given twice"));
}

TEST(PrepareOutputFile, CreatesTheMissingFoldersOfThePath) {
  const std::string path = scratch_path("prepare_output/runs/deeper/eval.json");
  prepare_output_file("flag --out", path);
  EXPECT_TRUE(fs::is_directory(fs::path(path).parent_path()));
  EXPECT_FALSE(fs::exists(path));  // only the folders: the tool writes the file
}

TEST(PrepareOutputFile, FailsNamingTheOutputWhenThePathCannotBeAFile) {
  const std::string folder = scratch_path("prepare_output_bad");
  fs::create_directories(folder);
  std::ofstream(folder + "/plain_file") << "x";
  EXPECT_THAT(error_of([&] { prepare_output_file("flag --out", folder); }),
              AllOf(HasSubstr("flag --out"), HasSubstr(folder), HasSubstr("is a folder")));
  EXPECT_THAT(error_of([&] { prepare_output_file("OUTPUT", folder + "/plain_file/p.txt"); }),
              AllOf(HasSubstr("OUTPUT: cannot create the folder"), HasSubstr(folder + "/plain_file/p.txt")));
  EXPECT_EQ(error_of([] { prepare_output_file("flag --out", ""); }), "flag --out: empty path");
}

// Root may write into any folder: the child that tries drops to the user
// nobody first.
TEST(PrepareOutputFile, FailsNamingTheOutputWhenTheFolderIsReadOnly) {
  const std::string folder = scratch_path("prepare_output_read_only");
  fs::create_directories(folder);
  fs::permissions(folder, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                  fs::perm_options::remove);
  const std::string output = folder + "/eval.json";
  EXPECT_EXIT(
      {
        if (::geteuid() == 0 && ::setuid(65534) != 0) std::_Exit(2);
        std::fputs(error_of([&] { prepare_output_file("flag --out", output); }).c_str(), stderr);
        std::_Exit(1);
      },
      ::testing::ExitedWithCode(1),
      "^flag --out: cannot write '.*/prepare_output_read_only/eval\\.json': Permission denied$");
  fs::permissions(folder, fs::perms::owner_all);
}

int throws_filesystem_error(int, char**) {
  throw fs::filesystem_error("cannot create directories", fs::path("runs/file/x"),
                             std::make_error_code(std::errc::not_a_directory));
}

int throws_engine_error(int, char**) { fail("[train] lr = 'x' is not a number"); }

// What run_tool("tool", body) prints on stderr; it must return 1.
std::string stderr_of_failing_tool(int (*body)(int, char**)) {
  // run_tool re-executes itself when either is unset.
  const testing::ScopedEnv omp("OMP_WAIT_POLICY", "passive"), openblas("OPENBLAS_THREAD_TIMEOUT", "4");
  char tool[] = "tool";
  char* argv[] = {tool, nullptr};
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_tool("tool", body, 1, argv), 1);
  return ::testing::internal::GetCapturedStderr();
}

TEST(RunTool, PrintsAFilesystemErrorAsAnInputErrorNamingThePath) {
  EXPECT_THAT(stderr_of_failing_tool(throws_filesystem_error),
              AllOf(HasSubstr("tool: error: "), HasSubstr("runs/file/x"), Not(HasSubstr("unexpected"))));
}

TEST(RunTool, PrintsAnEngineErrorOnOneLine) {
  EXPECT_EQ(stderr_of_failing_tool(throws_engine_error), "tool: error: [train] lr = 'x' is not a number\n");
}

TEST(DeviceParse, RejectsAGpuIndexThatIsNotANumberNamingTheText) {
  for (const std::string text : {"cuda:x", "cuda:-1", "cuda:", "cuda:1x", "cuda:+1"}) {
    EXPECT_THAT(error_of([&] { Device::parse(text); }),
                AllOf(HasSubstr("device '" + text + "'"), HasSubstr("is not a GPU index")))
        << text;
  }
}

TEST(DeviceParse, NoGpuHintFitsFlagsAndConfigFiles) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is visible";
  EXPECT_THAT(error_of([] { Device::parse("cuda:0"); }),
              AllOf(HasSubstr("device 'cuda:0' requested"), HasSubstr("--device cpu or [run] device = cpu")));
}

}  // namespace
}  // namespace engine
