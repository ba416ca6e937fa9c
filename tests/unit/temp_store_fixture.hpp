// A store (RocksDB) in a temporary directory, for the tests of what the
// storage layer keeps in it (queue_log_test.cpp, stream_log_test.cpp):
// reopen() closes it and opens it again on the same files, as a restart.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "storage/store.hpp"

namespace sluice::test {

class TempStoreTest : public ::testing::Test {
protected:
    TempStoreTest() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "sluice-store-XXXXXX").string();
        dir_ = mkdtemp(tmpl.data());
        reopen();
    }
    ~TempStoreTest() override {
        store_.reset();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    void reopen() {
        store_.reset();
        storage::StoreOptions o;
        o.path = dir_;
        std::string error;
        store_ = storage::Store::open(o, error);
        ASSERT_TRUE(store_) << error;
    }

    std::string dir_;
    std::unique_ptr<storage::Store> store_;
};

}  // namespace sluice::test
