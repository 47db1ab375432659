module github.com/libaigw/libaigw/bindings/go

go 1.19
