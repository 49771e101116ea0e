// Finding the shared data and unpacking archives into a cache, once.
#pragma once
#include <string>
#include <vector>

namespace data {

// Extracts a .tar / .tar.gz / .tgz / .tar.xz / .txz into cache_dir/<archive stem> the first
// time and returns that path; later calls for the same archive return at once. The marker
// file of a finished extraction records the archive's canonical path, size and modification
// time; the cache is reused only when they all match, so another archive of the same file
// name (in another folder), or this one rewritten or truncated, is extracted again and
// replaces the stale copy (a marker of any other form, such as an older version's, is
// stale too). The archive is unpacked (by the system tar) into a fresh temporary folder
// inside cache_dir, the marker is written last, and the folder is renamed into place (a
// stale copy is first moved aside and deleted), so an interrupted extraction never leaves a
// folder that looks complete. Extractions of one archive into one cache take turns under a
// lock (an flock on cache_dir/.<stem>.lock, which stays): a caller that waited uses the copy
// the one before it made. An interrupted run leaves a ".<stem>.partial-*" or
// ".<stem>.stale-*" folder, never used and deleted by the next extraction. A failing tar is
// an error with its message, and leaves the cache as it was. A folder in the way without a
// marker is an error naming it, and is left alone.
std::string extract_archive_once(const std::string& archive, const std::string& cache_dir);

// Extracts only the named members (paths inside the archive) into dest_dir, which must
// exist. GNU tar stops reading once it has found them all, so a few members near the start
// of a large compressed archive come out quickly (tests use this on CIFAR-10).
void extract_members(const std::string& archive, const std::string& dest_dir,
                     const std::vector<std::string>& members);

// The data folder: $ENGINE_DATA_DIR, else $ENGINE_SHARED_DIR/data, else ../shared/data
// relative to the working directory. If none exists, the error says where to get the data.
std::string default_data_dir();

// default_data_dir()/name; a missing file is an error that says where to get the data.
std::string data_file(const std::string& name);

// $ENGINE_CACHE_DIR, else ./.cache/data (not created here).
std::string default_cache_dir();

// Where to get CIFAR-10 and ImageNet, which forms the tools read and where they and the
// tests look for data: the advice that errors about missing data end with.
const char* where_to_get_data();

}  // namespace data
