#include "engine/os_error.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "tests/expect_error.h"

namespace engine {
namespace {

using testing::error_of;

TEST(OsError, NamesWhatFailedThePathAndTheReason) {
  EXPECT_EQ(error_of([] { fail_os_error(ENOENT, "cannot open", "data/x.bin"); }),
            std::string("cannot open 'data/x.bin': ") + std::strerror(ENOENT));
}

// The reason is the error number given, not whatever errno holds by then.
TEST(OsError, GivesTheReasonItIsGivenNotTheCurrentErrno) {
  EXPECT_EQ(error_of([] {
              errno = EACCES;
              check_os_error(EEXIST, "cannot make folder", "out");
            }),
            std::string("cannot make folder 'out': ") + std::strerror(EEXIST));
}

TEST(OsError, NoErrorNumberIsNoError) { EXPECT_NO_THROW(check_os_error(0, "cannot open", "x")); }

}  // namespace
}  // namespace engine
