// Opening the dataset a tool is pointed at (--data / [data] path, plus a subdir).
#pragma once
#include <memory>
#include <string>

#include "data/dataset.h"

namespace data {

// The tools' dataset opener. `data` is a folder, or a .tar / .tar.gz / .tgz / .tar.xz / .txz
// archive unpacked once into default_cache_dir() (archive.h); `subdir` (--subdir,
// [data] subdir / train_subdir / test_subdir) is a path inside it. The result is:
//
//  * CIFAR-10's official binary batches (CifarBinary) when the last component of `subdir`
//    is the split, "train" or "test", and the folder before it is cifar-10-batches-bin/
//    (data_batch_1..5.bin, test_batch.bin, batches.meta.txt) or holds that folder. So
//    --data cifar-10-binary.tar.gz (as downloaded) or --data path/to/cifar-10-batches-bin,
//    each with --subdir test, or train_subdir = cifar-10-batches-bin/train;
//  * otherwise an ImageFolder of data/subdir, e.g. cifar10/test/<class>/*.jpg, with the
//    optional `class_list` (ImageNet's synsets, see image_folder.h).
//
// A relative `class_list` that does not exist as given is looked for inside `data` (the
// unpacked archive), as `subdir` is: --synsets imagenet-sample/synsets.txt.
//
// Both forms give CIFAR-10's images the same label indices (its classes in sorted order).
// With the binary form a class list, if given, must name its 10 classes in order. A
// missing folder, a binary folder without a split, a missing or malformed batch file: an
// error naming the path (and, for a missing dataset, where to get the data).
std::unique_ptr<LabeledDataset> open_dataset(const std::string& data, const std::string& subdir,
                                             const std::string& class_list = "");

// The folder of official CIFAR-10 binary batches at `dir`: dir itself when it holds one of
// the batch files or batches.meta.txt, else dir/cifar-10-batches-bin when that does; ""
// when neither.
std::string find_cifar_binary_dir(const std::string& dir);

}  // namespace data
